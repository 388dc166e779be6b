//! What a backend can do, declared rather than discovered by failure.

/// The features of a backend. Conformance tests and the store consult these instead of
/// assuming; a known gap of a store or an emulator is recorded here, with the reason in
/// [`Capabilities::gaps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `PutMode::Create` is atomic: of concurrent creators exactly one wins.
    pub create: bool,
    /// `PutMode::IfMatch` is supported.
    pub if_match: bool,
    /// `Create` and `IfMatch` are also honoured on large (multipart or resumable)
    /// uploads. Where they are not, the backend sends conditional writes of any size
    /// as single requests, so the guarantee holds at the cost of streaming.
    pub conditional_large_writes: bool,
    /// User metadata is stored and returned by `head`.
    pub user_metadata: bool,
    /// Writes above this many bytes are split into parts (multipart, resumable).
    pub multipart_threshold: Option<u64>,
    /// The most keys one listing request returns; listings page through more.
    pub list_page_size: usize,
    /// Known gaps of this store, one line each, naming the upstream issue where there is one.
    pub gaps: Vec<String>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            create: true,
            if_match: true,
            conditional_large_writes: true,
            user_metadata: true,
            multipart_threshold: None,
            list_page_size: 1000,
            gaps: Vec::new(),
        }
    }
}
