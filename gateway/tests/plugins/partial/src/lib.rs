//! A test component of another world (it exports only `metadata`), so the host's refusal
//! of components that do not implement `source-plugin` can be tested.

wit_bindgen::generate!({
    path: "wit",
    world: "partial",
});

struct Partial;

impl Guest for Partial {
    fn metadata() -> Metadata {
        Metadata {
            name: "partial".to_string(),
            version: "0.1.0".to_string(),
            description: "Exports only metadata".to_string(),
            retry_window_hours: 1,
        }
    }
}

export!(Partial);
