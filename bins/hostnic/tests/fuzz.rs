//! Property-based fuzzing of everything the plugin decodes: the environment
//! and stdin parser, `prevResult` reading, and the agent protocol decoder.
//! Invariant for all of them: no input panics or hangs, and every rejection is
//! one of the specification's codes for bad input.
//!
//! Cases per property: `HOSTNIC_FUZZ_CASES` (default 256; `.ci/steps/cni-fuzz.sh`
//! runs more).

use std::collections::BTreeMap;

use hostnic_cni::env::EnvMap;
use hostnic_cni::result::{add_result, expected_from_prev_result};
use hostnic_cni::version::CniVersion;
use hostnic_cni::{Invocation, parse_invocation};
use hostnic_core::api::{AddReply, Request, Response, decode_frame, encode_frame};
use proptest::prelude::*;
use serde_json::{Value, json};

fn cases() -> u32 {
    std::env::var("HOSTNIC_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

const KEYS: [&str; 8] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
    "CNI_OTHER",
    "PATH",
];

/// Values near the interesting ones: real verbs, real ids, and noise.
fn env_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "add", ""
        ])
        .prop_map(String::from),
        prop::sample::select(vec![
            "c0ffee01",
            "eth0",
            "/run/netns/x",
            "IgnoreUnknown=1;K8S_POD_NAME=a;K8S_POD_NAMESPACE=b",
            "K8S_POD_NAME",
            ";;=;",
        ])
        .prop_map(String::from),
        ".{0,40}",
    ]
}

fn env_map() -> impl Strategy<Value = EnvMap> {
    prop::collection::btree_map(prop::sample::select(KEYS.to_vec()), env_value(), 0..8)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A JSON value of bounded depth.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::from),
        prop::sample::select(vec![
            "0.3.0", "0.4.0", "1.0.0", "1.1.0", "hostnic", "/tmp/x"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const CONFIG_KEYS: [&str; 16] = [
    "cniVersion",
    "name",
    "type",
    "agentSocket",
    "stateDir",
    "vethPrefix",
    "mtu",
    "logFile",
    "logLevel",
    "dns",
    "runtimeConfig",
    "prevResult",
    "cni.dev/valid-attachments",
    "agentTimeoutMs",
    "ipam",
    "capabilities",
];

/// A configuration object with real keys and arbitrary values.
fn config_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(CONFIG_KEYS.to_vec()),
        json_value(),
        0..10,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

fn check_parse(env: &EnvMap, stdin: &[u8]) -> Result<(), TestCaseError> {
    match parse_invocation(env, stdin) {
        Ok(Invocation::Version { .. }) => {}
        Ok(Invocation::Verb { env, .. }) => {
            prop_assert!(env.command != hostnic_cni::env::Command::Version);
        }
        Err(f) => {
            prop_assert!(
                [1, 4, 6, 7].contains(&f.error.code),
                "unexpected code {}",
                f.error.code
            );
            let rendered: Value = serde_json::from_str(&f.error.to_json(&f.cni_version)).unwrap();
            prop_assert_eq!(&rendered["code"], &json!(f.error.code));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Invariant: arbitrary environments with arbitrary bytes on stdin never
    /// panic, and rejections carry code 1, 4, 6 or 7.
    #[test]
    fn parser_survives_arbitrary_bytes(env in env_map(), stdin in prop::collection::vec(any::<u8>(), 0..256)) {
        check_parse(&env, &stdin)?;
    }

    /// Invariant: configurations with real keys and wrong-typed values never
    /// panic, for every verb.
    #[test]
    fn parser_survives_arbitrary_configs(env in env_map(), conf in config_object()) {
        check_parse(&env, conf.to_string().as_bytes())?;
    }

    /// Invariant: reading an arbitrary prevResult never panics.
    #[test]
    fn prev_result_reader_survives_anything(prev in json_value(), ifname in ".{0,16}") {
        let _ = expected_from_prev_result(&prev, &ifname);
    }

    /// Invariant: arbitrary bytes never make the protocol decoder panic, and an
    /// accepted frame lies within the buffer.
    #[test]
    fn protocol_decoder_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok((_, used)) = decode_frame::<Response>(&bytes) {
            prop_assert!(used <= bytes.len());
        }
        let _ = decode_frame::<Request>(&bytes);
    }

    /// Invariant: a well-framed arbitrary JSON body never panics either decoder,
    /// and whatever decodes as a response re-encodes into a frame that decodes
    /// to the same response.
    #[test]
    fn protocol_decoder_survives_framed_json(body in json_value()) {
        let frame = encode_frame(&body).unwrap();
        if let Ok((resp, _)) = decode_frame::<Response>(&frame) {
            let again = encode_frame(&resp).unwrap();
            prop_assert_eq!(decode_frame::<Response>(&again).unwrap().0, resp);
        }
        let _ = decode_frame::<Request>(&frame);
    }

    /// Invariant: any ADD reply that decodes renders a result for every version.
    #[test]
    fn rendering_survives_decoded_replies(body in json_value()) {
        if let Ok(reply) = serde_json::from_value::<AddReply>(body) {
            for v in [CniVersion::V0_3_0, CniVersion::V1_0_0, CniVersion::V1_1_0] {
                let r = add_result(v, &reply, None);
                prop_assert_eq!(&r["cniVersion"], &json!(v.as_str()));
            }
        }
    }
}

#[test]
fn parser_accepts_a_kubelet_add() {
    let env: EnvMap = BTreeMap::from([
        ("CNI_COMMAND".into(), "ADD".into()),
        ("CNI_CONTAINERID".into(), "c1".into()),
        ("CNI_NETNS".into(), "/run/netns/x".into()),
        ("CNI_IFNAME".into(), "eth0".into()),
        (
            "CNI_ARGS".into(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=a;K8S_POD_NAME=b".into(),
        ),
    ]);
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "hostnic"});
    let inv = parse_invocation(&env, conf.to_string().as_bytes()).unwrap();
    let Invocation::Verb { env, conf } = inv else {
        panic!("expected a verb")
    };
    assert_eq!(env.args.pod_name, "b");
    assert_eq!(conf.version, CniVersion::V1_0_0);
}
