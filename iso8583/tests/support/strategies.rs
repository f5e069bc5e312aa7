//! proptest strategies for valid messages, drawn from the field table itself.
#![allow(dead_code)]

use payhub_iso8583::{Charset, FieldSpec, Length, Message, spec};
use proptest::prelude::*;

/// The fields of the bank link profile (iso8583-profile.md) plus PAN and the two MACs.
pub const PROFILE_FIELDS: [u8; 22] = [
    2, 3, 4, 7, 11, 12, 13, 32, 37, 38, 39, 41, 42, 43, 49, 64, 70, 90, 100, 102, 103, 128,
];

/// Every field the table defines.
pub fn all_fields() -> Vec<u8> {
    (2..=128).filter(|&f| spec(f).is_some()).collect()
}

fn alphabet(charset: Charset) -> &'static str {
    match charset {
        Charset::N | Charset::Xn => "0123456789",
        Charset::An => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ",
        Charset::Ans => {
            " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"
        }
        Charset::Hex => "0123456789ABCDEFabcdef",
        Charset::Z => "0123456789=D",
    }
}

/// A value that `spec` accepts.
pub fn value(spec: &'static FieldSpec) -> BoxedStrategy<String> {
    let len = match spec.length {
        Length::Fixed(n) => (usize::from(n)..=usize::from(n)).boxed(),
        Length::LlVar(max) | Length::LllVar(max) => (0..=usize::from(max)).boxed(),
    };
    let chars: Vec<char> = alphabet(spec.charset).chars().collect();
    let xn = spec.charset == Charset::Xn;
    len.prop_flat_map(move |len| {
        proptest::collection::vec(proptest::sample::select(chars.clone()), len)
    })
    .prop_flat_map(move |chars| {
        let sign = proptest::sample::select(vec!['C', 'D']);
        sign.prop_map(move |s| {
            let mut chars = chars.clone();
            if xn && !chars.is_empty() {
                chars[0] = s;
            }
            chars.iter().collect::<String>()
        })
    })
    .boxed()
}

/// An MTI and values for some of `fields`, in number order.
pub fn fields_and_values(
    fields: Vec<u8>,
    mtis: Vec<&'static str>,
) -> impl Strategy<Value = (String, Vec<(u8, String)>)> {
    // At most 20 fields: enough to cover every layout, small enough to stay fast and in a frame.
    let count = fields.len().min(20);
    (
        proptest::sample::select(mtis).prop_map(str::to_owned),
        proptest::sample::subsequence(fields, 0..=count).prop_flat_map(|chosen| {
            chosen
                .into_iter()
                .map(|f| value(spec(f).expect("defined")).prop_map(move |v| (f, v)))
                .collect::<Vec<_>>()
        }),
    )
}

/// A valid message over `fields` that fits in one frame.
pub fn message(fields: Vec<u8>, mtis: Vec<&'static str>) -> impl Strategy<Value = Message> {
    fields_and_values(fields, mtis).prop_filter_map("fits in one frame", |(mti, values)| {
        let mut m = Message::new(&mti).expect("valid MTI");
        for (field, value) in &values {
            if m.set(*field, value).is_err() {
                return None;
            }
        }
        Some(m)
    })
}

pub const PROFILE_MTIS: [&str; 7] = ["0200", "0210", "0420", "0421", "0430", "0800", "0810"];
