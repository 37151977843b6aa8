//! Wire encodings of what engage writes: the published messages
//! ([`output`]: JSON and protobuf) and the persisted customer state
//! ([`state`]: the changelog's versioned protobuf records). The engine
//! produces plain data; the adapters that write it (the Kafka sink, the
//! changelog, file replay) encode it through here. Input decoding is
//! [`crate::decode`].

pub mod output;
pub mod state;
