//! The protobuf wire format, as much as ONNX needs: writing fields, and walking a message's fields without a
//! schema (so a backbone's graph can be copied through untouched).

/// Wire types used by ONNX messages.
pub(crate) const VARINT: u8 = 0;
pub(crate) const FIXED64: u8 = 1;
pub(crate) const BYTES: u8 = 2;
pub(crate) const FIXED32: u8 = 5;

/// A message being written.
#[derive(Debug, Default, Clone)]
pub(crate) struct Message(pub(crate) Vec<u8>);

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl Message {
    fn key(&mut self, field: u32, wire: u8) {
        put_varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire));
    }

    /// An integer field (int32/int64; negative values take ten bytes, as protobuf specifies).
    pub(crate) fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, VARINT);
        put_varint(&mut self.0, v as u64);
        self
    }

    pub(crate) fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, FIXED32);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn bytes(&mut self, field: u32, data: &[u8]) -> &mut Self {
        self.key(field, BYTES);
        put_varint(&mut self.0, data.len() as u64);
        self.0.extend_from_slice(data);
        self
    }

    pub(crate) fn string(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    pub(crate) fn message(&mut self, field: u32, m: &Message) -> &mut Self {
        self.bytes(field, &m.0)
    }

    /// Appends already-encoded fields verbatim.
    pub(crate) fn raw(&mut self, encoded: &[u8]) -> &mut Self {
        self.0.extend_from_slice(encoded);
        self
    }
}

/// One field of a parsed message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub(crate) number: u32,
    pub(crate) value: Value<'a>,
    /// The whole field as encoded (key included), for copying it through.
    pub(crate) encoded: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed(#[allow(dead_code)] u64),
}

impl<'a> Field<'a> {
    pub(crate) fn bytes(&self) -> Option<&'a [u8]> {
        match self.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub(crate) fn string(&self) -> Option<String> {
        self.bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    pub(crate) fn varint(&self) -> Option<u64> {
        match self.value {
            Value::Varint(v) => Some(v),
            _ => None,
        }
    }
}

fn get_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The values of a packed repeated varint field; `None` if the bytes end inside a value.
pub(crate) fn varints(data: &[u8]) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        out.push(get_varint(data, &mut pos)?);
    }
    Some(out)
}

/// The fields of one message, in file order; `None` if the bytes are not a well-formed message.
pub(crate) fn fields(data: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let start = pos;
        let key = get_varint(data, &mut pos)?;
        let number = u32::try_from(key >> 3).ok().filter(|&n| n > 0)?;
        let value = match (key & 7) as u8 {
            VARINT => Value::Varint(get_varint(data, &mut pos)?),
            FIXED64 => {
                let b = data.get(pos..pos + 8)?;
                pos += 8;
                Value::Fixed(u64::from_le_bytes(b.try_into().ok()?))
            }
            BYTES => {
                let len = usize::try_from(get_varint(data, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                let b = data.get(pos..end)?;
                pos = end;
                Value::Bytes(b)
            }
            FIXED32 => {
                let b = data.get(pos..pos + 4)?;
                pos += 4;
                Value::Fixed(u64::from(u32::from_le_bytes(b.try_into().ok()?)))
            }
            _ => return None,
        };
        out.push(Field {
            number,
            value,
            encoded: &data[start..pos],
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_written_are_read_back() {
        let mut inner = Message::default();
        inner.string(1, "x");
        let mut m = Message::default();
        m.int(1, 300).int(2, -1).float(3, 1.5).message(4, &inner);
        let f = fields(&m.0).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].varint(), Some(300));
        assert_eq!(f[1].varint().map(|v| v as i64), Some(-1));
        assert_eq!(
            f[1].encoded.len(),
            11,
            "negative ints take ten bytes plus the key"
        );
        assert!(matches!(f[2].value, Value::Fixed(v) if f32::from_bits(v as u32) == 1.5));
        let g = fields(f[3].bytes().unwrap()).unwrap();
        assert_eq!(g[0].string().as_deref(), Some("x"));
        let joined: Vec<u8> = f.iter().flat_map(|f| f.encoded.iter().copied()).collect();
        assert_eq!(joined, m.0, "fields copy through byte for byte");
    }

    #[test]
    fn truncated_messages_are_rejected() {
        let mut m = Message::default();
        m.string(1, "hello");
        assert!(fields(&m.0[..m.0.len() - 1]).is_none());
        assert!(fields(&[0x80]).is_none());
    }
}
