//! The encoding, pinned: documented bytes, golden vectors, equalities and errors.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::*;

use crate::cache::hashing::test_support::*;

#[derive(Serialize)]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Serialize)]
struct PointReordered {
    y: i64,
    x: i64,
}

#[derive(Serialize)]
struct PointRenamed {
    #[serde(rename = "horizontal")]
    x: i32,
    y: i32,
}

#[derive(Serialize)]
struct Wrapper(u16);

#[derive(Serialize)]
struct Marker;

#[derive(Serialize)]
enum Shape {
    Empty,
    Circle(f64),
    Segment(i32, i32),
    Rect { w: u32, h: u32 },
}

#[derive(Serialize)]
enum Other {
    Circle(f64),
}

#[test]
fn encoding_matches_the_documented_bytes() {
    assert_eq!(hex(&()), Manual::new().tag(b'U').digest());
    assert_eq!(hex(&false), Manual::new().raw(b"B\x00").digest());
    assert_eq!(hex(&-2i8), Manual::new().int(-2).digest());
    assert_eq!(
        hex(&u128::MAX),
        Manual::new().tag(b'I').raw(&[0]).raw(&[0xFF; 16]).digest()
    );
    assert_eq!(hex(&i128::MIN), Manual::new().int(i128::MIN).digest());
    assert_eq!(
        hex(&1.5f32),
        Manual::new()
            .tag(b'F')
            .raw(&1.5f64.to_bits().to_le_bytes())
            .digest()
    );
    assert_eq!(
        hex(&f64::NAN),
        Manual::new()
            .tag(b'F')
            .raw(&0x7FF8_0000_0000_0000u64.to_le_bytes())
            .digest()
    );
    assert_eq!(hex(&-0.0f64), Manual::new().tag(b'F').raw(&[0; 8]).digest());
    assert_eq!(hex("héllo"), Manual::new().str("héllo").digest());
    assert_eq!(hex(&'✓'), Manual::new().str("✓").digest());
    assert_eq!(hex(&None::<u8>), Manual::new().tag(b'N').digest());
    assert_eq!(
        hex(&Some(Some(3u8))),
        Manual::new().tag(b'P').tag(b'P').int(3).digest()
    );
    assert_eq!(
        hex(&vec![1u8, 2, 255]),
        Manual::new().tag(b'R').len(3).raw(&[1, 2, 255]).digest()
    );
    assert_eq!(
        hex(&vec![1u16, 256]),
        Manual::new().tag(b'L').len(2).int(1).int(256).digest()
    );
    assert_eq!(
        hex(&("ab", true)),
        Manual::new()
            .tag(b'L')
            .len(2)
            .str("ab")
            .raw(b"B\x01")
            .digest()
    );
    // Entries sorted by their encoding: "a" (S, len 1, 'a') before "b".
    let map: HashMap<&str, i32> = [("b", 1), ("a", -1)].into();
    assert_eq!(
        hex(&map),
        Manual::new()
            .tag(b'M')
            .len(2)
            .str("a")
            .int(-1)
            .str("b")
            .int(1)
            .digest()
    );
    assert_eq!(
        hex(&Point { x: 1, y: 2 }),
        Manual::new()
            .tag(b'M')
            .len(2)
            .str("x")
            .int(1)
            .str("y")
            .int(2)
            .digest()
    );
    assert_eq!(
        hex(&Shape::Empty),
        Manual::new()
            .tag(b'E')
            .len(5)
            .raw(b"Empty")
            .tag(b'U')
            .digest()
    );
    assert_eq!(
        hex(&Shape::Segment(-1, 300)),
        Manual::new()
            .tag(b'E')
            .len(7)
            .raw(b"Segment")
            .tag(b'L')
            .len(2)
            .int(-1)
            .int(300)
            .digest()
    );
    assert_eq!(
        hex(&Shape::Rect { w: 3, h: 4 }),
        Manual::new()
            .tag(b'E')
            .len(4)
            .raw(b"Rect")
            .tag(b'M')
            .len(2)
            .str("h")
            .int(4)
            .str("w")
            .int(3)
            .digest()
    );
    let digest = Digest::from_bytes([7; 32]);
    assert_eq!(hex(&digest), Manual::new().tag(b'H').raw(&[7; 32]).digest());
    assert_eq!(
        hex(&Unordered(vec!["b", "a"])),
        Manual::new().tag(b'A').len(2).str("a").str("b").digest()
    );
}

/// Values whose digests are pinned: any change to the encoding fails here.
fn golden_values() -> Vec<(&'static str, String)> {
    let mut nested: BTreeMap<String, BTreeMap<u32, Vec<&str>>> = BTreeMap::new();
    nested
        .entry("b".into())
        .or_default()
        .insert(2, vec!["x", "y"]);
    nested.entry("a".into()).or_default().insert(1, vec![]);
    vec![
        ("unit", hex(&())),
        ("true", hex(&true)),
        ("0", hex(&0u8)),
        ("1", hex(&1u8)),
        ("-1", hex(&-1i32)),
        ("i64::MIN", hex(&i64::MIN)),
        ("u128::MAX", hex(&u128::MAX)),
        ("0.0", hex(&0.0f64)),
        ("1.5", hex(&1.5f64)),
        ("-2.25", hex(&-2.25f32)),
        ("NaN", hex(&f64::NAN)),
        ("inf", hex(&f64::INFINITY)),
        ("empty string", hex("")),
        ("unicode string", hex("héllo wörld ✓ 🦀")),
        ("None", hex(&None::<u8>)),
        ("Some(0)", hex(&Some(0u8))),
        ("Some(None)", hex(&Some(None::<u8>))),
        ("bytes [1,2,3]", hex(&vec![1u8, 2, 3])),
        ("empty list", hex(&Vec::<String>::new())),
        ("list [1,300]", hex(&vec![1u32, 300])),
        ("tuple (\"a\",1)", hex(&("a", 1u8))),
        ("nested map", hex(&nested)),
        ("struct Point", hex(&Point { x: 1, y: -2 })),
        ("struct renamed", hex(&PointRenamed { x: 1, y: -2 })),
        ("newtype", hex(&Wrapper(7))),
        ("unit struct", hex(&Marker)),
        ("unit variant", hex(&Shape::Empty)),
        ("newtype variant", hex(&Shape::Circle(0.5))),
        ("tuple variant", hex(&Shape::Segment(1, 2))),
        ("struct variant", hex(&Shape::Rect { w: 3, h: 4 })),
        ("digest", hex(&Digest::from_bytes([0xAB; 32]))),
        ("unordered", hex(&Unordered(vec![3u8, 1, 2]))),
        ("key", {
            let mut key = KeyHasher::new();
            key.add_input("n", &3u32).unwrap();
            key.component("version", |h| h.str("1.0").done()).unwrap();
            key.finish().to_hex()
        }),
    ]
}

const GOLDEN: &[(&str, &str)] = &[
    (
        "unit",
        "e04188fed98bfc7ab50f3310b8558c54f19d24a6fc3506d16c270053404c07b5",
    ),
    (
        "true",
        "fe64154e3703932eed835fa3053c2e8a50a961669916f1613a8be58ef73a9fbb",
    ),
    (
        "0",
        "fb34201a76eef694a67d05a6411de297e27ed1477694f2b91e2beb5db48da749",
    ),
    (
        "1",
        "ccaba0614a2e2fc992a396cfeb1f5fddf9baa81bc12b91df90bf79e3100af315",
    ),
    (
        "-1",
        "17a6e9e719f8441586271fa11753e53b6e8f4da6464bdf09615dd00023ee7d64",
    ),
    (
        "i64::MIN",
        "111a1a23533782572600396d69cee5a111af36d24ec3f4ad03dc204263ef91ef",
    ),
    (
        "u128::MAX",
        "62cbb37dae53e48c350813f308108d6c71bf9a247e6a2efdfa4833c8afcfefc5",
    ),
    (
        "0.0",
        "4ce04b1c3b07c09e71d91bfade9974b404defe7c67ce13afc780509125f3b881",
    ),
    (
        "1.5",
        "5a9ac2af4eb411cf9bb011d2d6c2c06f95abafe43130444bf1a3782601877142",
    ),
    (
        "-2.25",
        "bc9dc95ccb0f01f16b91cc370205f2ef7cf766ee25c8364c5fcff9e7de749dab",
    ),
    (
        "NaN",
        "2612169b36c14a36388a234c28c28202393587d3bf2c6460330ed31e25b39ad2",
    ),
    (
        "inf",
        "8c1febe26fc1a545c616d6b2b7121a9ad379bdb11b1178921c3330074177c966",
    ),
    (
        "empty string",
        "bbd8983ced369aba5472beaa61b7baaa5a80ef0457452fe33ef77ca36747d188",
    ),
    (
        "unicode string",
        "279b978f35a43fd9e30729181e958afcde0b3c75060ca3aa1e07d5d4d7569a06",
    ),
    (
        "None",
        "34ab8b65c2622b75106dba567a23b032357b6f78bb9893221cf5c4a61cfc4689",
    ),
    (
        "Some(0)",
        "4cbbbbb0aa5cd0a31dd6b6a78a872b27d581c176354bb27e8ea720482f78a086",
    ),
    (
        "Some(None)",
        "c3a5876693e1a179a01a979b80cbeea2bb8fb72e6a0954025d2f8a10140ba979",
    ),
    (
        "bytes [1,2,3]",
        "2177406cb5087d73ba27f6367ce5b97dbf395c9951b631707f267e8951e9c7d0",
    ),
    (
        "empty list",
        "603d6683f52531e9bf5fb542d74f6fa0c712863f18d53683b28837641010f5e4",
    ),
    (
        "list [1,300]",
        "575d4ea73b9a84779d471cbe60105f1222fed04482062b1bcc0d1c17bab30c2a",
    ),
    (
        "tuple (\"a\",1)",
        "06629881a42a3ca826f449f9004ca172061dba111fd86cca63c826375e1b84b4",
    ),
    (
        "nested map",
        "7df02384a2944484b658e7a151004413f18fc9bd8ec9c8900bd10e1068dbd344",
    ),
    (
        "struct Point",
        "85762dae31098ff8d3324ce149838ffb050544301deb98a7bb50d8f816caa8bf",
    ),
    (
        "struct renamed",
        "cb47d7a38724a25aaa06712fa0c22c7c913c18d026c3119c60ca5182ffe11b53",
    ),
    (
        "newtype",
        "1a80807fdc71d0cf66edd16cb318954b086b1358f8645684ad814c596eed54c0",
    ),
    (
        "unit struct",
        "e04188fed98bfc7ab50f3310b8558c54f19d24a6fc3506d16c270053404c07b5",
    ),
    (
        "unit variant",
        "34202cdfed7f65bc05431f59b4d82eeccad198b060fcde9c8e3bd46c355da48b",
    ),
    (
        "newtype variant",
        "0251e6cc85ae97ba412443efaf4ae93155b9760a0bfb754fd8226c5dc4df3e86",
    ),
    (
        "tuple variant",
        "3a105ab540e8d1353e264e33d8d03034e0f803b5ad60af8929591ad579f35afa",
    ),
    (
        "struct variant",
        "bd7f548bb34a7b875146fd977c955ba3279e256df1fabf3dc0cdbc807bd3939c",
    ),
    (
        "digest",
        "f1b5a0439257bdbd0e504006afae620a48d938cda6dc3c0f16b2072e229d1dd4",
    ),
    (
        "unordered",
        "64dbb59ce8e21f96d48eed0d160431054f0199ff32783487139a003e86461e4c",
    ),
    (
        "key",
        "163669974d3eea66da453090933209bb3dbdee4896b04ee0085ff8d768c5d4d3",
    ),
];

#[test]
fn golden_vectors_pin_the_encoding() {
    let actual = golden_values();
    assert_eq!(actual.len(), GOLDEN.len());
    for ((name, digest), (pinned_name, pinned)) in actual.iter().zip(GOLDEN) {
        assert_eq!(name, pinned_name);
        assert_eq!(
            digest, pinned,
            "the digest of {name} changed: the encoding changed"
        );
    }
}

#[test]
fn the_key_is_the_documented_tuple_of_digests() {
    let input = Manual::new().int(3).digest();
    let version = Manual::new().str("1.0").digest();
    let key = Manual::new()
        .tag(b'L')
        .len(4)
        .str("cairn-key")
        .int(i128::from(KEY_FORMAT_VERSION))
        .tag(b'M')
        .len(1)
        .str("version")
        .tag(b'H')
        .raw(version.parse::<Digest>().unwrap().as_bytes())
        .tag(b'M')
        .len(1)
        .str("n")
        .tag(b'H')
        .raw(input.parse::<Digest>().unwrap().as_bytes())
        .digest();
    let golden = GOLDEN.iter().find(|(name, _)| *name == "key").unwrap().1;
    assert_eq!(key, golden);
}

#[test]
fn equal_values_of_different_types_hash_alike() {
    // Integers by value, whatever their width or signedness.
    assert_eq!(hex(&1u8), hex(&1i64));
    assert_eq!(hex(&1u8), hex(&1u128));
    assert_eq!(hex(&-5i8), hex(&-5i128));
    assert_eq!(hex(&7usize), hex(&7u32));
    // Floats canonical: widened to f64, one zero, one NaN.
    assert_eq!(hex(&1.5f32), hex(&1.5f64));
    assert_eq!(hex(&-0.0f64), hex(&0.0f64));
    assert_eq!(hex(&-0.0f32), hex(&0.0f64));
    assert_eq!(hex(&f64::NAN), hex(&-f64::NAN));
    assert_eq!(hex(&f64::NAN), hex(&f32::NAN));
    assert_eq!(hex(&f64::NAN), hex(&f64::from_bits(0x7FF0_0000_0000_0001)));
    // Strings and chars.
    assert_eq!(hex(&'x'), hex("x"));
    assert_eq!(hex("x"), hex(&String::from("x")));
    // Byte strings and lists of small integers.
    let data = [1u8, 2, 3];
    assert_eq!(hex(&data), hex(&data.to_vec()));
    assert_eq!(hex(&data), hex(&Bytes::from_static(&[1, 2, 3])));
    assert_eq!(hex(&data), hex(&Blob(&data)));
    assert_eq!(hex(&data), hex(&(1u8, 2u16, 3i64)));
    assert_eq!(hex(&data), hex(&vec![Wrapper(1), Wrapper(2), Wrapper(3)]));
    assert_eq!(hex(&Vec::<String>::new()), hex(&Bytes::new()));
    // Tuples are lists; structs are maps; newtypes are transparent.
    assert_eq!(hex(&(1u32, 300u32)), hex(&vec![1u64, 300]));
    assert_eq!(
        hex(&Point { x: 1, y: 2 }),
        hex(&PointReordered { y: 2, x: 1 })
    );
    let as_map: BTreeMap<&str, i32> = [("x", 1), ("y", 2)].into();
    assert_eq!(hex(&Point { x: 1, y: 2 }), hex(&as_map));
    assert_eq!(hex(&Wrapper(7)), hex(&7u8));
    assert_eq!(hex(&Marker), hex(&()));
    // Enums by variant name, not by the enum's name.
    assert_eq!(hex(&Shape::Circle(1.0)), hex(&Other::Circle(1.0)));
    // A declared digest stands for what it digests.
    let digest = Digest::from_bytes([1; 32]);
    assert_eq!(hex(&Hashed::new("anything", digest)), hex(&digest));
}

#[test]
fn different_values_hash_differently() {
    let distinct = [
        hex(&()),
        hex(&None::<u8>),
        hex(&Some(())),
        hex(&Some(None::<u8>)),
        hex(&false),
        hex(&0u8),
        hex(&0.0f64),
        hex(""),
        hex(&Vec::<u8>::new()),
        hex(&Some("")),
        hex(&1u8),
        hex(&-1i8),
        hex(&1.0f64),
        hex("1"),
        hex(&vec![1u8]),
        hex(&Some(1u8)),
        hex(&Shape::Empty),
        hex("Empty"),
        hex(&Point { x: 1, y: 2 }),
        hex(&PointRenamed { x: 1, y: 2 }),
        hex(&Point { x: 2, y: 1 }),
        hex(&vec![1u32, 300]),
        hex(&vec![300u32, 1]),
        hex(&Unordered(vec![1u32, 300])),
        hex(&Shape::Segment(1, 2)),
        hex(&Shape::Rect { w: 1, h: 2 }),
        hex(&Digest::from_bytes([0; 32])),
        hex(&Blob([0u8; 32])),
        hex(&vec!["a", "bc"]),
        hex(&vec!["ab", "c"]),
        hex(&("a", ("b", "c"))),
        hex(&(("a", "b"), "c")),
    ];
    let unique: HashSet<&String> = distinct.iter().collect();
    assert_eq!(unique.len(), distinct.len());
}

#[test]
fn hashmap_order_never_matters() {
    let mut entries: Vec<(String, BTreeMap<String, f64>)> = (0..200)
        .map(|i| {
            let inner = (0..5)
                .map(|j| (format!("k{j}"), f64::from(i * j)))
                .collect();
            (format!("entry-{i}"), inner)
        })
        .collect();
    let ordered: BTreeMap<_, _> = entries.iter().cloned().collect();
    let expected = hex(&ordered);
    let mut rng = rand::rng();
    let mut digests = HashSet::new();
    for _ in 0..100 {
        entries.shuffle(&mut rng);
        let map: HashMap<String, HashMap<String, f64>> = entries
            .iter()
            .map(|(k, inner)| (k.clone(), inner.clone().into_iter().collect()))
            .collect();
        digests.insert(hex(&map));
    }
    assert_eq!(digests.into_iter().collect::<Vec<_>>(), vec![expected]);
}

#[test]
fn hashset_order_never_matters_when_unordered() {
    let items: Vec<String> = (0..100).map(|i| format!("item-{i}")).collect();
    let a: HashSet<&String> = items.iter().collect();
    let b: HashSet<&String> = items.iter().rev().collect();
    assert_eq!(hex(&Unordered(&a)), hex(&Unordered(&b)));
    let sorted: BTreeSet<&String> = items.iter().collect();
    assert_eq!(hex(&Unordered(&a)), hex(&Unordered(&sorted)));

    #[derive(Serialize)]
    struct Tags {
        #[serde(serialize_with = "unordered")]
        tags: HashSet<String>,
    }
    let one = Tags {
        tags: items.iter().cloned().collect(),
    };
    let two = Tags {
        tags: items.iter().rev().cloned().collect(),
    };
    assert_eq!(hex(&one), hex(&two));

    let err = hash_value(&Unordered(3u8)).unwrap_err();
    assert!(err.cause().contains("must wrap a sequence"), "{err}");
}

#[test]
fn large_bytes_hash_on_all_cores_with_the_documented_framing() {
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let data = Bytes::from(data);
    let mut framed = vec![b'R'];
    framed.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let mut expected = blake3::Hasher::new();
    expected.update(&framed).update(&data);

    let before = PARALLEL_UPDATES.with(Cell::get);
    let digest = hash_value(&data).unwrap();
    assert_eq!(digest, Digest::from(expected.finalize()));
    assert!(
        PARALLEL_UPDATES.with(Cell::get) > before,
        "the parallel path was not taken"
    );

    let mut h = ContentHasher::new();
    h.bytes(&data);
    assert_eq!(h.finalize(), digest);
    assert_eq!(hash_value(&Blob(&data)).unwrap(), digest);
}

#[test]
fn a_vec_of_bytes_hashes_like_bytes() {
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    assert_eq!(hex(&data), hex(&Bytes::from(data.clone())));
    let nested = vec![data.clone(), vec![]];
    assert_eq!(hex(&nested), hex(&vec![Blob(&data[..]), Blob(&[][..])]));
}

/// A list that does not declare its length.
struct Unsized<T>(Vec<T>);

impl<T: Serialize> Serialize for Unsized<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(None)?;
        for item in &self.0 {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

#[test]
fn lists_of_unknown_length_hash_like_known_ones() {
    assert_eq!(hex(&Unsized(vec![1u8, 2])), hex(&vec![1u8, 2]));
    assert_eq!(
        hex(&Unsized(vec![1u32, 2, 3000])),
        hex(&vec![1u32, 2, 3000])
    );
    assert_eq!(hex(&Unsized(vec!["a", "b"])), hex(&vec!["a", "b"]));
    assert_eq!(hex(&Unsized(Vec::<u8>::new())), hex(&Vec::<u8>::new()));
    // A list that starts with bytes and goes on with something else.
    let mixed = serde_json::json!([1, 2, "three", [4]]);
    assert_eq!(
        hex(&mixed),
        Manual::new()
            .tag(b'L')
            .len(4)
            .int(1)
            .int(2)
            .str("three")
            .tag(b'R')
            .len(1)
            .raw(&[4])
            .digest()
    );
}

/// A value that refuses to be serialized, like a live connection.
struct Connection;

impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, _serializer: S) -> Result<S::Ok, S::Error> {
        Err(S::Error::custom("a live connection cannot be serialized"))
    }
}

#[derive(Serialize)]
struct Pool {
    name: String,
    connections: Vec<Connection>,
}

#[derive(Serialize)]
struct Config {
    pools: BTreeMap<String, Pool>,
}

#[test]
fn an_unhashable_input_is_an_error_naming_it_and_where() {
    let config = Config {
        pools: [(
            "main".to_string(),
            Pool {
                name: "main".into(),
                connections: vec![Connection],
            },
        )]
        .into(),
    };
    let mut key = KeyHasher::new();
    let err = key.add_input("config", &config).unwrap_err();
    assert_eq!(err.input(), Some("config"));
    assert_eq!(err.path(), ".pools[\"main\"].connections[0]");
    assert_eq!(err.cause(), "a live connection cannot be serialized");
    assert_eq!(
        err.to_string(),
        "input 'config' cannot be hashed at `.pools[\"main\"].connections[0]`: a live \
         connection cannot be serialized; exclude it from the cache key (e.g. INPUTS - \
         \"config\") or give it a hash method (implement CacheHash, or wrap it in Hashed \
         or FileInput)"
    );
    assert!(
        key.inputs().is_empty(),
        "a failed input must not be part of the key"
    );

    let err = hash_value(&(1u8, Connection)).unwrap_err();
    assert_eq!(err.path(), "[1]");
    assert!(err
        .to_string()
        .starts_with("value cannot be hashed at `[1]`: "));

    let err = KeyHasher::new()
        .component("salt", |h| h.value(&Connection).map(|_| ()))
        .unwrap_err();
    assert_eq!(err.component(), Some("salt"));
    assert!(err
        .to_string()
        .starts_with("cache key component 'salt' cannot be hashed: "));

    let as_cairn: crate::Error = KeyHasher::new()
        .add_input("conn", &Connection)
        .unwrap_err()
        .into();
    assert_eq!(as_cairn.kind(), crate::ErrorKind::Config);
    assert!(as_cairn
        .to_string()
        .contains("input 'conn' cannot be hashed"));
    assert!(!as_cairn.is_retryable());
}

#[test]
fn errors_in_map_keys_enums_and_sequences_are_located() {
    let mut map: HashMap<u32, Vec<Connection>> = HashMap::new();
    map.insert(7, vec![Connection]);
    assert_eq!(hash_value(&map).unwrap_err().path(), "[7][0]");

    #[derive(Serialize)]
    enum Job {
        Run { conn: Connection },
    }
    assert_eq!(
        hash_value(&Job::Run { conn: Connection })
            .unwrap_err()
            .path(),
        "::Run.conn"
    );

    /// Declares three elements and produces one.
    struct LyingSeq;
    impl Serialize for LyingSeq {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = serializer.serialize_seq(Some(3))?;
            seq.serialize_element("one")?;
            seq.end()
        }
    }
    let err = hash_value(&LyingSeq).unwrap_err();
    assert!(
        err.cause().contains("declared 3 elements but produced 1"),
        "{err}"
    );
}
