//! The conformance suite on the in-process memory backend and on the object_store
//! adapter (over object_store's own in-memory store).

mod conformance;

use std::sync::Arc;

use cairn::backend::{DynBackend, MemoryBackend};

mod memory {
    use super::*;
    conformance_tests!(async { Some(Arc::new(MemoryBackend::new()) as DynBackend) });
}

mod object_store_adapter {
    use super::*;
    use cairn::backend::ObjectStoreBackend;
    conformance_tests!(async {
        Some(Arc::new(ObjectStoreBackend::new(
            Arc::new(object_store::memory::InMemory::new()),
            "memory://object_store",
        )) as DynBackend)
    });
}
