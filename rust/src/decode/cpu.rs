//! Temporary minimal chunk codec (bytes, little endian only); replaced by the zarrs-based
//! codec chain.
use crate::error::{err, Result};

/// Decoder of one chunk.
pub struct ChunkCodec {
    len: usize,
    elem: usize,
}

impl ChunkCodec {
    /// Builds the codec.
    ///
    /// # Errors
    /// InvalidArgument for anything but `bytes`.
    pub fn new(data_type: &str, _fill: &serde_json::Value, codecs: &serde_json::Value, chunk_shape: &[u64]) -> Result<Self> {
        let elem = crate::zarr::SourceDtype::from_name(data_type).map_or(1, crate::zarr::SourceDtype::size);
        let names: Vec<&str> = codecs.as_array().map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect()).unwrap_or_default();
        if names != ["bytes"] {
            return Err(err!(InvalidArgument, "unsupported codec chain {names:?}"));
        }
        Ok(Self { len: chunk_shape.iter().product::<u64>() as usize * elem, elem })
    }
    /// Decoded bytes.
    pub fn decoded_len(&self) -> usize {
        self.len
    }
    /// Element size.
    pub fn elem_size(&self) -> usize {
        self.elem
    }
    /// Decodes.
    ///
    /// # Errors
    /// Decode on a length mismatch.
    pub fn decode_into(&self, encoded: &[u8], out: &mut [u8]) -> Result<()> {
        if encoded.len() != out.len() {
            return Err(err!(Decode, "expected {} bytes, found {}", out.len(), encoded.len()));
        }
        out.copy_from_slice(encoded);
        Ok(())
    }
}
