//! A signed Shopify webhook with arbitrary header lines inserted anywhere (any bytes in
//! names and values, repeats of the signature headers): the router answers 200, 400, 401,
//! 408 or 413, or hyper refuses the head with one of its documented answers.

#![no_main]

use arbitrary::Arbitrary;
use hookgate::sample;
use hookgate_fuzz::{SHOPIFY_SECRET, check, exchange, request};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    at: u8,
    extra: Vec<(Vec<u8>, Vec<u8>)>,
    event: u64,
}

// Compiling the plugins or starting the gateway takes seconds once per process: done
// before the first input, so that it is not reported as a slow unit.
fuzz_target!(init: {
    hookgate_fuzz::harness();
}, |input: Input| {
    let signed = sample::shopify(
        SHOPIFY_SECRET,
        "orders/create",
        "shop.myshopify.com",
        &format!("fuzz-{}", input.event),
        b"{\"id\":1}",
    );
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = signed
        .headers
        .iter()
        .map(|(n, v)| (n.clone().into_bytes(), v.clone().into_bytes()))
        .collect();
    let at = usize::from(input.at) % (headers.len() + 1);
    for (offset, header) in input.extra.into_iter().take(64).enumerate() {
        headers.insert(at + offset, header);
    }
    let raw = request(b"POST", signed.path.as_bytes(), &headers, &signed.body);
    if let Some(responses) = exchange(&raw)
        && let Some(first) = responses.first()
    {
        check(first);
        if first.header("x-request-id").is_some() {
            assert!(
                [200, 400, 401, 408, 413].contains(&first.status),
                "router answered {}",
                first.status
            );
        }
    }
});
