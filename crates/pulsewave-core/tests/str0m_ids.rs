//! The patched str0m (vendor/str0m/PATCH.md, "… and an id's text without
//! the string trim") gives a `Mid`'s and a `Rid`'s text as `str::trim` did.
#![allow(clippy::unwrap_used)]

use std::str::from_utf8;

use str0m::media::{Mid, Rid};

#[test]
fn ascii_ids_read_as_str_trim_reads_them() {
    // Every ASCII byte at either end and in the middle, beside spaces and
    // the other ASCII whitespace.
    for c in 0u8..128 {
        for arr in [
            [c, b'a', b' ', b' ', b' ', b' ', b' ', b' '],
            [b' ', b'a', c, b'b', b' ', b'\t', 0x0b, b' '],
            [b' ', b' ', b'a', b'b', c, c, b'\r', c],
            [c; 8],
        ] {
            let rid = Rid::from_array(arr);
            let expected = from_utf8(&arr).unwrap().trim();
            assert_eq!(&*rid, expected, "{arr:?}");
        }
    }
    assert_eq!(&*Mid::from("0"), "0");
    assert_eq!(&*Rid::from("r2"), "r2");
}

#[test]
fn a_non_ascii_id_reads_as_before() {
    let text = "\u{a0}é\u{85} ".as_bytes();
    let mut arr = [b' '; 16];
    arr[..text.len()].copy_from_slice(text);
    assert_eq!(&*Mid::from_array(arr), "é");
}
