//! The protobuf codec of our gRPC services: prost encoding, with small
//! initial buffers.
//!
//! tonic's default codec gives every stream 8 KiB to read into and 8 KiB
//! to write from, before a single message. A collector holding 10,000
//! mostly idle agent streams would keep 160 MiB in those buffers; they
//! start at 1 KiB here and grow on demand for large batches.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial read and write buffer of one stream.
const BUFFER_BYTES: usize = 1024;
/// Encoded bytes after which a response stream yields to the transport
/// (tonic's default).
const YIELD_BYTES: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_BYTES)
}

/// Prost encoding with small initial buffers; the generated client and
/// server use it for every RPC.
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
