//! Any bytes as an HTTP/1.1 conversation with the gateway (pipelined requests included):
//! every answer is the router's, with a SPEC status and a JSON error, or one of hyper's
//! documented ones; a panic anywhere in the server aborts the process (libfuzzer-sys's
//! hook), which libFuzzer reports.

#![no_main]

use arbitrary::Arbitrary;
use hookgate_fuzz::{ADMIN_TOKEN, check, exchange, request};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    /// The conversation as raw bytes.
    Raw(Vec<u8>),
    /// A well-formed request line around an arbitrary method and target, with or
    /// without the admin token.
    Request {
        method: Vec<u8>,
        target: Vec<u8>,
        admin: bool,
        body: Vec<u8>,
    },
}

// Compiling the plugins or starting the gateway takes seconds once per process: done
// before the first input, so that it is not reported as a slow unit.
fuzz_target!(init: {
    hookgate_fuzz::harness();
}, |input: Input| {
    let raw = match input {
        Input::Raw(raw) => raw,
        Input::Request {
            method,
            target,
            admin,
            body,
        } => {
            let mut target = target;
            if !target.starts_with(b"/") {
                target.splice(0..0, b"/api/v1/".iter().copied());
            }
            let headers = if admin {
                vec![(
                    b"authorization".to_vec(),
                    format!("Bearer {ADMIN_TOKEN}").into_bytes(),
                )]
            } else {
                Vec::new()
            };
            request(&method, &target, &headers, &body)
        }
    };
    if let Some(responses) = exchange(&raw) {
        for response in &responses {
            check(response);
        }
    }
});
