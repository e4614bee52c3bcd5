//! RFC 1071 Internet checksum. The sum is accumulated in 64 bits over 8-byte
//! words so the compiler can keep it in one register; folding happens once.

/// One's-complement sum of `data` added to `initial` (a partial sum, e.g. a pseudo-header), folded to 16 bits, not inverted.
pub fn sum16(data: &[u8], initial: u32) -> u16 {
    let mut acc: u64 = initial as u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // Big-endian words keep the arithmetic in network order.
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (s, carry) = acc.overflowing_add(w);
        acc = s + carry as u64;
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc = add_carry(acc, u16::from_be_bytes([rest[i], rest[i + 1]]) as u64);
        i += 2;
    }
    if i < rest.len() {
        acc = add_carry(acc, (rest[i] as u64) << 8);
    }
    fold(acc)
}

fn add_carry(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + carry as u64
}

fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The value to put in a checksum field: the inverted sum.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    !sum16(data, initial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(data: &[u8], initial: u32) -> u16 {
        let mut s: u32 = initial;
        for pair in data.chunks(2) {
            let w = if pair.len() == 2 { u16::from_be_bytes([pair[0], pair[1]]) } else { (pair[0] as u16) << 8 };
            s += w as u32;
            s = (s & 0xffff) + (s >> 16);
        }
        !((s & 0xffff) + (s >> 16)) as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        assert_eq!(sum16(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0), 0xddf2);
    }

    #[test]
    fn agrees_with_bytewise_reference() {
        let mut x: u32 = 12345;
        let mut data = vec![0u8; 1501];
        for b in data.iter_mut() {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        for len in [0usize, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 1499, 1500, 1501] {
            assert_eq!(checksum(&data[..len], 0), reference(&data[..len], 0), "len {len}");
            assert_eq!(checksum(&data[..len], 0x1_2345), reference(&data[..len], 0x1_2345), "len {len} with initial");
        }
    }
}
