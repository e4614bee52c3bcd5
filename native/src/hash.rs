//! A 5-tuple flow hash per frame, for a whole batch in one call. Used for
//! spreading flows (ECMP, VXLAN source-port entropy, queue selection): it must
//! be stable per flow and cheap, not cryptographic. Frames that are not IP hash
//! on their MACs and EtherType; IP fragments after the first hash without ports
//! so every fragment of a datagram lands on the same value.

const ETH_HLEN: usize = 14;

#[inline]
fn mix(h: u32, k: u32) -> u32 {
    // The murmur3 block step: good avalanche for a few multiplies.
    let k = k.wrapping_mul(0xcc9e_2d51).rotate_left(15).wrapping_mul(0x1b87_3593);
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline]
fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline]
fn be16(f: &[u8], at: usize) -> u32 {
    ((f[at] as u32) << 8) | f[at + 1] as u32
}

#[inline]
fn be32(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

pub fn flow_hash(frame: &[u8]) -> u32 {
    if frame.len() < ETH_HLEN {
        return 0;
    }
    let mut l3 = ETH_HLEN;
    let mut ethertype = be16(frame, 12);
    let mut tags = 0;
    while (ethertype == 0x8100 || ethertype == 0x88a8) && tags < 2 && frame.len() >= l3 + 4 {
        ethertype = be16(frame, l3 + 2);
        l3 += 4;
        tags += 1;
    }
    let mut h: u32 = 0x9747_b28c;
    match ethertype {
        0x0800 if frame.len() >= l3 + 20 => {
            let ihl = ((frame[l3] & 0x0f) as usize) * 4;
            let proto = frame[l3 + 9] as u32;
            h = mix(h, be32(frame, l3 + 12));
            h = mix(h, be32(frame, l3 + 16));
            h = mix(h, proto);
            let fragment = be16(frame, l3 + 6) & 0x1fff != 0;
            if !fragment && has_ports(proto) && ihl >= 20 && frame.len() >= l3 + ihl + 4 {
                h = mix(h, be32(frame, l3 + ihl));
            }
        }
        0x86dd if frame.len() >= l3 + 40 => {
            let proto = frame[l3 + 6] as u32;
            for w in 0..8 {
                h = mix(h, be32(frame, l3 + 8 + w * 4));
            }
            h = mix(h, proto);
            if has_ports(proto) && frame.len() >= l3 + 44 {
                h = mix(h, be32(frame, l3 + 40));
            }
        }
        _ => {
            h = mix(h, be32(frame, 0));
            h = mix(h, be32(frame, 4));
            h = mix(h, be32(frame, 8));
            h = mix(h, ethertype);
        }
    }
    finish(h)
}

fn has_ports(proto: u32) -> bool {
    matches!(proto, 6 | 17 | 132 | 136)
}
