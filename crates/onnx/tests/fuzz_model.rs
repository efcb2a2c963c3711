//! The ONNX reader on damaged and hostile files: `graft check` and `graft export` parse users' `.onnx` files
//! (protobuf with lengths and nesting chosen by whoever wrote the file). Whatever the bytes, reading returns
//! the model or an error — never a panic, a hang, or an allocation out of proportion to the file (a length
//! field claiming terabytes must not reserve them).

use graft_onnx::{GraphSummary, OnnxModel};
use graft_stdx::alloc_probe::{CountingAlloc, peak_during};
use proptest::prelude::*;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/models")
            .join(name),
    )
    .unwrap()
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A protobuf field as a hostile writer might lay it out.
#[derive(Debug, Clone)]
enum Field {
    Varint(u32, u64),
    /// A length-delimited field whose declared length may differ from the bytes that follow.
    Bytes(u32, Vec<u8>, Option<u64>),
    Message(u32, Vec<Field>),
    Fixed(u32, bool, u64),
    /// A key with an undefined wire type (6 or 7).
    Bad(u32, u8),
}

fn encode(fields: &[Field], out: &mut Vec<u8>) {
    for f in fields {
        match f {
            Field::Varint(n, v) => {
                varint(out, u64::from(*n) << 3);
                varint(out, *v);
            }
            Field::Bytes(n, b, declared) => {
                varint(out, (u64::from(*n) << 3) | 2);
                varint(out, declared.unwrap_or(b.len() as u64));
                out.extend_from_slice(b);
            }
            Field::Message(n, inner) => {
                let mut body = Vec::new();
                encode(inner, &mut body);
                varint(out, (u64::from(*n) << 3) | 2);
                varint(out, body.len() as u64);
                out.extend(body);
            }
            Field::Fixed(n, wide, v) => {
                varint(out, (u64::from(*n) << 3) | if *wide { 1 } else { 5 });
                if *wide {
                    out.extend_from_slice(&v.to_le_bytes());
                } else {
                    out.extend_from_slice(&(*v as u32).to_le_bytes());
                }
            }
            Field::Bad(n, wire) => varint(out, (u64::from(*n) << 3) | u64::from(*wire)),
        }
    }
}

/// Field numbers ONNX uses at every level (model 1–8, graph 1/5/11/12, node 1–5, tensor 1/2/8/14, …), and a
/// few others.
fn number() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 1u32..=14, 1 => 15u32..=40, 1 => Just(0u32), 1 => Just(u32::MAX >> 3)]
}

fn lengths() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        4 => Just(None),
        1 => (0u64..64).prop_map(Some),
        1 => prop::sample::select(vec![u64::MAX, 1 << 40, u64::from(u32::MAX), 1 << 62]).prop_map(Some),
    ]
}

fn message() -> impl Strategy<Value = Vec<Field>> {
    let leaf = prop_oneof![
        (number(), any::<u64>()).prop_map(|(n, v)| Field::Varint(n, v)),
        (
            number(),
            prop::collection::vec(any::<u8>(), 0..24),
            lengths()
        )
            .prop_map(|(n, b, l)| Field::Bytes(n, b, l)),
        (number(), any::<bool>(), any::<u64>()).prop_map(|(n, w, v)| Field::Fixed(n, w, v)),
        (number(), 6u8..=7).prop_map(|(n, w)| Field::Bad(n, w)),
    ];
    // Nesting as deep as a model → graph → node → attribute → subgraph chain, and deeper.
    prop::collection::vec(leaf, 0..6).prop_recursive(12, 96, 6, |inner| {
        prop::collection::vec(
            prop_oneof![
                2 => (number(), inner).prop_map(|(n, m)| Field::Message(n, m)),
                1 => (number(), any::<u64>()).prop_map(|(n, v)| Field::Varint(n, v)),
            ],
            0..6,
        )
    })
}

/// `bytes` with a few bytes replaced or inserted, then maybe cut.
fn edited(name: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let bytes = fixture(name);
    let len = bytes.len();
    (
        prop::collection::vec((0..len, any::<u8>(), any::<bool>()), 1..8),
        prop::option::of(0..len),
    )
        .prop_map(move |(edits, cut)| {
            let mut b = bytes.clone();
            for (at, byte, insert) in edits {
                let at = at % b.len().max(1);
                if insert {
                    b.insert(at, byte);
                } else if let Some(x) = b.get_mut(at) {
                    *x = byte;
                }
            }
            if let Some(cut) = cut {
                b.truncate(cut);
            }
            b
        })
}

/// Reads `bytes` every way graft does and checks the allocation bound.
fn read_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (_, peak) = peak_during(|| {
        let _ = GraphSummary::read(bytes).map(|s| s.position_limit());
        if let Ok(model) = OnnxModel::parse(bytes) {
            let _ = (model.producer(), model.metadata(), model.opset());
            for v in model.inputs().iter().chain(model.outputs()) {
                let _ = (v.type_text(), v.rank());
            }
        }
    });
    // Parsed fields are small structs per encoded field (at least two bytes each), a few levels deep.
    let bound = 128 * bytes.len() + (1 << 20);
    prop_assert!(
        peak <= bound,
        "{} bytes in, {peak} bytes allocated at the peak",
        bytes.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_generated_message_is_read_or_refused_within_bounds(fields in message()) {
        let mut bytes = Vec::new();
        encode(&fields, &mut bytes);
        read_all(&bytes)?;
        // The same fields as a model's graph (field 7), where the readers look deepest.
        let mut model = Vec::new();
        encode(&[Field::Varint(1, 8), Field::Message(7, fields)], &mut model);
        read_all(&model)?;
    }

    #[test]
    fn an_edited_embedder_is_read_or_refused_within_bounds(bytes in edited("tiny-embedder.onnx")) {
        read_all(&bytes)?;
    }

    #[test]
    fn an_edited_bert_graph_is_read_or_refused_within_bounds(bytes in edited("tiny-bert.onnx")) {
        read_all(&bytes)?;
    }
}

#[test]
fn the_untouched_fixtures_parse_and_count() {
    for name in ["tiny-embedder.onnx", "tiny-bert.onnx"] {
        let bytes = fixture(name);
        let (model, peak) = peak_during(|| OnnxModel::parse(&bytes).map(|m| m.inputs().len()));
        assert_eq!(model.unwrap(), 3, "{name}");
        // The probe counts: parsing allocates something, and within the bound the fuzzers hold it to.
        assert!(
            peak > 0 && peak <= 128 * bytes.len() + (1 << 20),
            "{name}: {peak}"
        );
    }
    assert_eq!(
        GraphSummary::read(&fixture("tiny-bert.onnx"))
            .unwrap()
            .position_limit(),
        Some(32)
    );
}
