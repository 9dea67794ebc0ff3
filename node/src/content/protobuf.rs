//! A minimal protocol-buffers codec: enough for dag-pb manifests and, later, wire messages.
//!
//! Hand-written so the encoded bytes are exactly Archivist's (field order, no default
//! elision surprises) and so decoding of untrusted input is bounded and never panics.

/// Why bytes are not a valid protobuf message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated message")]
    Truncated,
    #[error("varint longer than 10 bytes")]
    VarintOverflow,
    #[error("unsupported wire type {0}")]
    WireType(u8),
    #[error("field number 0")]
    FieldZero,
}

/// Appends protobuf fields to a byte buffer.
#[derive(Default, Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn uint(&mut self, field: u32, value: u64) -> &mut Self {
        self.key(field, 0);
        put_varint(&mut self.buf, value);
        self
    }

    pub fn bytes(&mut self, field: u32, value: &[u8]) -> &mut Self {
        self.key(field, 2);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(value);
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        put_varint(&mut self.buf, (u64::from(field) << 3) | u64::from(wire_type));
    }
}

/// Appends `value` as a LEB128 varint.
pub fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Reads a varint from the front of `input`, returning it and the bytes consumed.
pub fn get_varint(input: &[u8]) -> Result<(u64, usize), DecodeError> {
    let mut value = 0u64;
    for (i, &byte) in input.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return Err(DecodeError::VarintOverflow);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if input.len() >= 10 { Err(DecodeError::VarintOverflow) } else { Err(DecodeError::Truncated) }
}

/// One decoded field value.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed64(u64),
    Fixed32(u32),
}

/// Iterates the fields of a message; yields an error (once) on malformed input.
pub struct Fields<'a> {
    input: &'a [u8],
    failed: bool,
}

/// Reads the fields of `input` in order.
pub fn fields(input: &[u8]) -> Fields<'_> {
    Fields { input, failed: false }
}

impl<'a> Fields<'a> {
    fn next_field(&mut self) -> Result<(u32, Value<'a>), DecodeError> {
        let (key, used) = get_varint(self.input)?;
        self.input = &self.input[used..];
        let field = u32::try_from(key >> 3).map_err(|_| DecodeError::Truncated)?;
        if field == 0 {
            return Err(DecodeError::FieldZero);
        }
        let value = match (key & 7) as u8 {
            0 => {
                let (v, used) = get_varint(self.input)?;
                self.input = &self.input[used..];
                Value::Varint(v)
            }
            1 => {
                let bytes = self.take(8)?;
                Value::Fixed64(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
            }
            2 => {
                let (len, used) = get_varint(self.input)?;
                self.input = &self.input[used..];
                let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                let bytes = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
            }
            other => return Err(DecodeError::WireType(other)),
        };
        Ok((field, value))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.input.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.input.split_at(len);
        self.input = tail;
        Ok(head)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.input.is_empty() {
            return None;
        }
        let result = self.next_field();
        self.failed = result.is_err();
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_boundaries() {
        // (value, encoded length)
        for (value, len) in [(0u64, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (u64::MAX, 10)] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.len(), len);
            assert_eq!(get_varint(&buf), Ok((value, len)));
        }
        assert_eq!(get_varint(&[0x80]), Err(DecodeError::Truncated));
        assert_eq!(get_varint(&[0xff; 11]), Err(DecodeError::VarintOverflow));
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Err(DecodeError::VarintOverflow)
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        let cases: [(&[u8], DecodeError); 4] = [
            (&[0x0a, 0x05, 1, 2], DecodeError::Truncated), // bytes field longer than input
            (&[0x0b], DecodeError::WireType(3)),           // group start: unsupported
            (&[0x00, 0x01], DecodeError::FieldZero),
            (&[0x09, 1, 2, 3], DecodeError::Truncated), // fixed64 cut short
        ];
        for (input, want) in cases {
            let got: Result<Vec<_>, _> = fields(input).collect();
            assert_eq!(got, Err(want), "input {input:?}");
        }
    }

    proptest! {
        #[test]
        fn fields_round_trip(entries in proptest::collection::vec((1u32..1000, any::<u64>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..8)) {
            let mut w = Writer::new();
            for (field, number, bytes) in &entries {
                w.uint(*field, *number).bytes(*field, bytes);
            }
            let encoded = w.finish();
            let decoded: Vec<_> = fields(&encoded).collect::<Result<_, _>>().unwrap();
            let mut want = Vec::new();
            for (field, number, bytes) in &entries {
                want.push((*field, Value::Varint(*number)));
                want.push((*field, Value::Bytes(bytes)));
            }
            prop_assert_eq!(decoded, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = fields(&input).count();
        }
    }
}
