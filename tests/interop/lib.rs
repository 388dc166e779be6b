//! Interoperability tests live in `tests/`: each writes through a cairn backend and
//! reads back with the store's own client (aws-sdk-s3, google-cloud-storage), and the
//! other way round. They are a crate of their own so that those clients are compiled
//! only for these tests, never for a program that uses cairn.
