//! The codec the generated servers use: protobuf as tonic-prost does it, except
//! that a request body that is not the message it claims to be is the caller's
//! mistake, INVALID_ARGUMENT, not the server's (tonic-prost says INTERNAL, a
//! choice made for both sides at once). Clients keep tonic-prost's codec, where
//! an answer that cannot be decoded is indeed INTERNAL.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use tonic_types::ErrorDetails;

use crate::errors::ErrorReason;

/// Encodes answers of type `T`, decodes requests of type `U`.
pub struct RequestCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// tonic-prost's decoder, whose only error is a body that does not decode.
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            ErrorReason::MalformedRequest.status(
                format!(
                    "the request body is not a valid protobuf message: {}",
                    status.message()
                ),
                &[],
                ErrorDetails::new(),
            )
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
