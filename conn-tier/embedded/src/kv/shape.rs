//! Key and value shapes: each one's redb type, and its byte encoding for
//! fjall, which sorts as the typed value does (docs/design.md, "The
//! embedded engines").

use crate::error::Error as StoreErr;
use chat_core::Result;

/// A key or value type of a table: its redb type, and its byte encoding
/// for fjall, which sorts as the typed value does.
pub(crate) trait Shape: Sized + Clone + 'static {
    type R: ::redb::Value + 'static;
    fn to_r(&self) -> <Self::R as ::redb::Value>::SelfType<'_>;
    fn from_r(r: <Self::R as ::redb::Value>::SelfType<'_>) -> Self;
    fn enc(&self, out: &mut Vec<u8>);
    /// Reads one value off the front of `b`.
    fn dec(b: &mut &[u8]) -> Option<Self>;
}

/// A key shape: its redb type is a key.
pub(crate) trait KeyShape: Shape<R: ::redb::Key> {}
impl<T: Shape<R: ::redb::Key>> KeyShape for T {}

impl Shape for String {
    type R = &'static str;
    fn to_r(&self) -> &str {
        self
    }
    fn from_r(r: &str) -> Self {
        r.to_string()
    }
    /// Escaped (0 as 0 0xff) and ended by 0 1, so a string sorts before
    /// every longer one it begins, and its end never looks like a 0 byte.
    fn enc(&self, out: &mut Vec<u8>) {
        for &b in self.as_bytes() {
            out.push(b);
            if b == 0 {
                out.push(0xff);
            }
        }
        out.extend_from_slice(&[0, 1]);
    }
    fn dec(b: &mut &[u8]) -> Option<Self> {
        let mut s = Vec::new();
        let mut i = 0;
        loop {
            match (b.get(i)?, b.get(i + 1)) {
                (0, Some(1)) => break,
                (0, Some(0xff)) => {
                    s.push(0);
                    i += 2;
                }
                (0, _) => return None,
                (&c, _) => {
                    s.push(c);
                    i += 1;
                }
            }
        }
        *b = &b[i + 2..];
        String::from_utf8(s).ok()
    }
}

impl Shape for u64 {
    type R = u64;
    fn to_r(&self) -> u64 {
        *self
    }
    fn from_r(r: u64) -> Self {
        r
    }
    fn enc(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn dec(b: &mut &[u8]) -> Option<Self> {
        let (head, rest) = b.split_first_chunk::<8>()?;
        *b = rest;
        Some(u64::from_be_bytes(*head))
    }
}

/// A record body: the rest of the bytes, as is.
impl Shape for Vec<u8> {
    type R = &'static [u8];
    fn to_r(&self) -> &[u8] {
        self
    }
    fn from_r(r: &[u8]) -> Self {
        r.to_vec()
    }
    fn enc(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn dec(b: &mut &[u8]) -> Option<Self> {
        let v = b.to_vec();
        *b = &[];
        Some(v)
    }
}

impl Shape for (String, u64) {
    type R = (&'static str, u64);
    fn to_r(&self) -> (&str, u64) {
        (&self.0, self.1)
    }
    fn from_r(r: (&str, u64)) -> Self {
        (r.0.to_string(), r.1)
    }
    fn enc(&self, out: &mut Vec<u8>) {
        self.0.enc(out);
        self.1.enc(out);
    }
    fn dec(b: &mut &[u8]) -> Option<Self> {
        Some((String::dec(b)?, u64::dec(b)?))
    }
}

impl Shape for (u64, u64) {
    type R = (u64, u64);
    fn to_r(&self) -> (u64, u64) {
        *self
    }
    fn from_r(r: (u64, u64)) -> Self {
        r
    }
    fn enc(&self, out: &mut Vec<u8>) {
        self.0.enc(out);
        self.1.enc(out);
    }
    fn dec(b: &mut &[u8]) -> Option<Self> {
        Some((u64::dec(b)?, u64::dec(b)?))
    }
}

impl Shape for (String, String) {
    type R = (&'static str, &'static str);
    fn to_r(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
    fn from_r(r: (&str, &str)) -> Self {
        (r.0.to_string(), r.1.to_string())
    }
    fn enc(&self, out: &mut Vec<u8>) {
        self.0.enc(out);
        self.1.enc(out);
    }
    fn dec(b: &mut &[u8]) -> Option<Self> {
        Some((String::dec(b)?, String::dec(b)?))
    }
}

impl Shape for (String, String, String) {
    type R = (&'static str, &'static str, &'static str);
    fn to_r(&self) -> (&str, &str, &str) {
        (&self.0, &self.1, &self.2)
    }
    fn from_r(r: (&str, &str, &str)) -> Self {
        (r.0.to_string(), r.1.to_string(), r.2.to_string())
    }
    fn enc(&self, out: &mut Vec<u8>) {
        self.0.enc(out);
        self.1.enc(out);
        self.2.enc(out);
    }
    fn dec(b: &mut &[u8]) -> Option<Self> {
        Some((String::dec(b)?, String::dec(b)?, String::dec(b)?))
    }
}

/// Encodes a whole key or value.
pub(crate) fn enc<S: Shape>(s: &S) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    s.enc(&mut out);
    out
}

/// Decodes a whole key or value; trailing bytes are corruption.
pub(crate) fn dec<S: Shape>(mut b: &[u8]) -> Result<S> {
    match S::dec(&mut b) {
        Some(v) if b.is_empty() => Ok(v),
        _ => Err(StoreErr::Corrupt(format!("a row of {} bytes cannot be read", b.len())).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<S: Shape>(s: &S) -> Vec<u8> {
        enc(s)
    }

    #[test]
    fn encoded_keys_sort_as_the_typed_keys_do() {
        let mut typed: Vec<(String, u64)> = vec![
            ("a".into(), 2),
            ("a".into(), 10),
            ("a\0".into(), 0),
            ("ab".into(), 1),
            ("".into(), u64::MAX),
            ("b".into(), 0),
            ("a".into(), 256),
        ];
        let mut by_bytes = typed.clone();
        typed.sort();
        by_bytes.sort_by_key(bytes);
        assert_eq!(typed, by_bytes);
        let mut pairs: Vec<(String, String)> = vec![
            ("u".into(), "dm#a".into()),
            ("u".into(), "".into()),
            ("u\0x".into(), "a".into()),
            ("u".into(), "\u{7f}".into()),
            ("ua".into(), "".into()),
        ];
        let mut by_bytes = pairs.clone();
        pairs.sort();
        by_bytes.sort_by_key(bytes);
        assert_eq!(pairs, by_bytes);
    }

    #[test]
    fn every_shape_reads_back_what_it_wrote() {
        let k = ("a\0b".to_string(), "".to_string(), "é".to_string());
        assert_eq!(dec::<(String, String, String)>(&enc(&k)).unwrap(), k);
        assert_eq!(
            dec::<(u64, u64)>(&enc(&(1, u64::MAX))).unwrap(),
            (1, u64::MAX)
        );
        assert_eq!(dec::<Vec<u8>>(b"{}").unwrap(), b"{}".to_vec());
        // A cut or padded row is refused, never misread.
        let mut cut = enc(&("conv".to_string(), 7u64));
        cut.pop();
        assert!(dec::<(String, u64)>(&cut).is_err());
        let mut long = enc(&7u64);
        long.push(0);
        assert!(dec::<u64>(&long).is_err());
    }
}
