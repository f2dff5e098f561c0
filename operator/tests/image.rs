//! The sequencer image cannot drift from what deploys it: the repository's Dockerfile builds and copies
//! exactly the sequencer package's `[[bin]]`s, runs them as a non-root user, and documents the tag
//! `ghcr.io/stateset/stateset-sequencer:<workspace version>`; the operator's default `spec.image`, the
//! example Sequencer, the chart and `render`'s output name that image, and the migration Job runs a
//! binary the image holds. (Building the image is too slow for CI: `docker build` is in the README.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sequencer_operator::crd::DEFAULT_IMAGE;

const REPOSITORY: &str = "ghcr.io/stateset/stateset-sequencer";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The sequencer package's binaries and the workspace version, from `cargo metadata`.
fn sequencer_package() -> (BTreeSet<String>, String) {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let package = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "stateset-sequencer")
        .expect("the stateset-sequencer package");
    let bins = package["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    (bins, package["version"].as_str().unwrap().to_owned())
}

/// Every `ghcr.io/stateset/stateset-sequencer:<tag>` named in a text.
fn images_in(text: &str) -> BTreeSet<String> {
    text.match_indices(REPOSITORY)
        .filter_map(|(at, _)| {
            let rest = text[at + REPOSITORY.len()..].strip_prefix(':')?;
            let tag: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c)).collect();
            Some(format!("{REPOSITORY}:{tag}"))
        })
        .collect()
}

#[test]
fn the_dockerfile_ships_the_sequencer_binaries_as_a_non_root_user() {
    let dockerfile = read("Dockerfile");
    let (bins, _) = sequencer_package();
    assert_eq!(bins, BTreeSet::from(["stateset-sequencer".into(), "stateset-sequencer-admin".into()]));

    let built: BTreeSet<String> = dockerfile
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1].to_owned())
        .collect();
    assert_eq!(built, bins, "the Dockerfile builds exactly the package's [[bin]]s");
    assert!(dockerfile.contains("cargo build --release --locked -p stateset-sequencer"), "{dockerfile}");

    let runtime = dockerfile.rsplit_once("\nFROM ").expect("a multi-stage build").1;
    let copied: BTreeSet<String> = runtime
        .lines()
        .filter(|l| l.starts_with("COPY --from=build "))
        .map(|l| {
            let dest = l.split_whitespace().last().unwrap();
            assert!(dest.starts_with("/usr/local/bin/"), "binaries go on PATH: {l}");
            dest.rsplit('/').next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(copied, bins, "the image holds exactly the package's [[bin]]s");
    assert!(runtime.starts_with("gcr.io/distroless/cc-debian12:nonroot"), "runtime stage: {runtime}");
    let user = runtime.lines().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert!(!user.starts_with('0') && !user.starts_with("root"), "non-root: USER {user}");
    assert!(runtime.contains("ENTRYPOINT [\"/usr/local/bin/stateset-sequencer\"]"), "{runtime}");
}

#[test]
fn the_operator_the_example_the_chart_and_the_readme_name_the_image_the_dockerfile_builds() {
    let (_, version) = sequencer_package();
    let image = format!("{REPOSITORY}:{version}");
    let build = format!("build -t {image} .");
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains(&format!("docker {build}")), "the Dockerfile documents `docker {build}`");
    assert!(read("README.md").contains(&build), "the README gives the build command `docker {build}`");

    assert_eq!(DEFAULT_IMAGE, image, "the operator's default spec.image");
    let example: yaml_serde::Value = yaml_serde::from_str(&read("operator/examples/sequencer.yaml")).unwrap();
    assert_eq!(example["spec"]["image"].as_str(), Some(image.as_str()), "operator/examples/sequencer.yaml");

    let chart = root().join("charts/sequencer-operator");
    let mut named = BTreeSet::new();
    let mut stack = vec![chart];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                named.extend(images_in(&text));
            }
        }
    }
    assert_eq!(named, BTreeSet::from([image.clone()]), "every sequencer image the chart names");
    assert!(read("charts/sequencer-operator/Chart.yaml").contains(&format!("appVersion: \"{version}\"")));

    // What the operator applies for a Sequencer that does not set spec.image.
    let mut manifest = read("operator/examples/sequencer.yaml");
    manifest = manifest.lines().filter(|l| !l.trim_start().starts_with("image:")).collect::<Vec<_>>().join("\n");
    let rendered = sequencer_operator::render::render(&manifest, "example.yaml").expect("render");
    assert_eq!(images_in(&rendered), BTreeSet::from([image]), "render names only the default image");
    assert!(rendered.contains("stateset-sequencer-admin"), "the migration Job runs the image's admin binary");
}

#[test]
fn the_image_scanner_reads_whole_tags() {
    let text = format!("image: {REPOSITORY}:0.1.0\n  default: \"{REPOSITORY}:1.2.3-rc.1\"");
    assert_eq!(images_in(&text), BTreeSet::from([format!("{REPOSITORY}:0.1.0"), format!("{REPOSITORY}:1.2.3-rc.1")]));
}
