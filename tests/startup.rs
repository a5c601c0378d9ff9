//! Start-up refusals and bundle validation through the real binary. None of these needs a broker.

mod common;

use std::path::Path;
use std::process::Command;

use common::{bin, repo};

fn run(args: &[&str], config: Option<&str>) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(repo());
    if let Some(text) = config {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(path);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
[kafka]
"bootstrap.servers" = "127.0.0.1:1"
[consumer]
group_id = "g"
[model]
root = "models"
name = "co2-mlp"
[http]
listen = ""
"#;

#[test]
fn the_example_config_documents_valid_keys() {
    let out = Command::new(bin())
        .args(["run", "--print-config", "--config", "streamcast.toml"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn unknown_config_key_exits_2_naming_the_key() {
    let (code, _, err) = run(&["run"], Some(&format!("{GOOD}\n[batching]\nmax_batch_sise = 3\n")));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("batching") && err.contains("max_batch_sise"), "{err}");
}

#[test]
fn invalid_config_value_exits_2_naming_the_key() {
    let (code, _, err) =
        run(&["run"], Some(&GOOD.replace("name = \"co2-mlp\"", "name = \"co2-mlp\"\nexecution_provider = \"tpu\"")));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("model.execution_provider"), "{err}");
}

#[test]
fn missing_bundle_exits_2_naming_the_path() {
    let (code, _, err) = run(&["run"], Some(&GOOD.replace("co2-mlp", "no-such-model")));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no-such-model"), "{err}");
    let (code, _, err) =
        run(&["run"], Some(&GOOD.replace("name = \"co2-mlp\"", "name = \"co2-mlp\"\nversion = \"99\"")));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("co2-mlp/99"), "{err}");
}

#[test]
fn cuda_requested_without_cuda_exits_2() {
    let (code, _, err) =
        run(&["run"], Some(&GOOD.replace("name = \"co2-mlp\"", "name = \"co2-mlp\"\nexecution_provider = \"cuda\"")));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CUDA execution provider requested but unavailable"), "{err}");
}

#[test]
fn a_missing_onnx_runtime_library_is_named_with_the_fix() {
    let out = Command::new(bin())
        .args(["models", "validate", "co2-mlp"])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .current_dir(repo())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
}

#[test]
fn print_config_redacts_secrets() {
    let (code, out, err) = run(
        &["run", "--print-config"],
        Some(&GOOD.replace("[consumer]", "\"sasl.password\" = \"hunter2\"\n[consumer]")),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("sasl.password") && !out.contains("hunter2"), "{out}");
    assert!(out.contains("max_batch_size = 256"), "defaults are shown: {out}");
}

#[test]
fn shipped_bundles_validate() {
    for (name, version) in [("co2-mlp", "1"), ("co2-mlp", "2"), ("co2-gru", "1"), ("co2-quantile", "1")] {
        let (code, out, err) = run(&["models", "validate", name, version], None);
        assert_eq!(code, Some(0), "{name}/{version}: {err}");
        assert!(out.contains("golden cases match"), "{out}");
    }
    let (code, out, _) = run(&["models", "list"], None);
    assert_eq!(code, Some(0));
    assert!(out.contains("co2-mlp: versions 1, 2 (latest 2)"), "{out}");
    let (code, out, _) = run(&["models", "inspect", "co2-gru"], None);
    assert_eq!(code, Some(0));
    assert!(out.contains("layout Sequence") && out.contains("horizon:    4"), "{out}");
    let (code, out, _) = run(&["models", "inspect", "co2-quantile"], None);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("quantiles:  [0.05, 0.5, 0.95] (output [N, 4, 3]") && out.contains("frequency:  604800s"),
        "{out}"
    );
}

/// Copies the shipped co2-mlp v1 bundle, lets `edit` break its manifest, and validates it.
fn validate_broken(edit: impl Fn(&mut serde_json::Value) -> Option<String>) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("models/co2-mlp/1");
    let dst = dir.path().join("co2-mlp/1");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(src.join("model.onnx"), dst.join("model.onnx")).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("bundle.json")).unwrap()).unwrap();
    let text = edit(&mut manifest).unwrap_or_else(|| serde_json::to_string_pretty(&manifest).unwrap());
    std::fs::write(dst.join("bundle.json"), text).unwrap();
    let out = Command::new(bin()).args(["models", "validate"]).arg(&dst).current_dir(repo()).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn broken_bundles_are_refused_with_a_precise_message() {
    let (code, err) = validate_broken(|m| {
        m["input"]["name"] = "features_in".into();
        None
    });
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no input `features_in`") && err.contains("its inputs: input"), "{err}");

    let (code, err) = validate_broken(|m| {
        m["window"] = 12.into();
        m["golden"] = serde_json::json!([]);
        None
    });
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("input has shape") && err.contains("36"), "{err}");

    let (code, err) = validate_broken(|m| {
        m["scaler"]["std"][1] = 123456.75.into();
        // Python's json.dump writes NaN like this.
        Some(serde_json::to_string_pretty(m).unwrap().replace("123456.75", "NaN"))
    });
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("scaler.std[1]") && err.contains("finite"), "{err}");

    let (code, err) = validate_broken(|m| {
        let p = m["golden"][0]["prediction"][0].as_f64().unwrap();
        m["golden"][0]["prediction"][0] = (p + 0.5).into();
        None
    });
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("golden case 0 step 0"), "{err}");

    let (code, err) = validate_broken(|m| {
        m["output"]["name"] = "variable".into();
        None
    });
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no output `variable`"), "{err}");
}

#[test]
fn bundle_json_schema_and_shipped_examples_agree_with_the_rust_types() {
    use streamcast::event::{Actual, Prediction};
    let examples = repo().join("schemas/examples");
    let read = |name: &str| std::fs::read_to_string(examples.join(name)).unwrap();
    let p: Prediction = serde_json::from_str(&read("prediction.json")).expect("prediction example");
    assert!(!p.prediction.is_empty());
    let a: Actual = serde_json::from_str(&read("actual.json")).expect("actual example");
    assert!(!a.actual.is_empty());
    let schema = streamcast::event::FeatureSchema {
        names: vec!["load".into(), "temp".into()],
        window: 1,
        max_message_bytes: 1 << 20,
        reject_unknown_features: false,
        max_id_bytes: streamcast::event::DEFAULT_MAX_ID_BYTES,
    };
    streamcast::event::InputEvent::decode(read("input_event.json").as_bytes(), &schema).expect("input example");
    let _: streamcast::bundle::Manifest = serde_json::from_str(&read("bundle.json")).expect("bundle example");
    assert!(Path::new(&examples.join("metrics_snapshot.json")).is_file());
}

#[test]
fn every_shipped_example_validates_against_its_schema() {
    for name in ["actual", "alert", "bundle", "input_event", "metrics_snapshot", "prediction"] {
        let read = |p: String| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(repo().join(p)).unwrap()).unwrap()
        };
        let schema = read(format!("schemas/{name}.schema.json"));
        let example = read(format!("schemas/examples/{name}.json"));
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
        let errors: Vec<String> = validator.iter_errors(&example).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "schemas/examples/{name}.json: {errors:?}");
    }
}

#[test]
fn the_readme_shows_the_example_config_verbatim() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let example = std::fs::read_to_string(repo().join("streamcast.toml")).unwrap();
    let body = &example[example.find("[kafka]").unwrap()..];
    let start = readme.find("```toml\n[kafka]").expect("the README's config block") + "```toml\n".len();
    let block = &readme[start..start + readme[start..].find("\n```").unwrap()];
    assert_eq!(block.trim_end(), body.trim_end(), "README's config block differs from streamcast.toml");
}
