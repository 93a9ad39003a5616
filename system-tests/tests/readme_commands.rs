//! The README's build and run commands do what it says: `cargo run --release`
//! starts the all-in-one gateway, and the build command of "Run the services
//! apart" makes every binary that section then runs. Checked against `cargo
//! metadata`, without building in release.

use std::collections::BTreeSet;

const README: &str = include_str!("../../README.md");

/// The README section under `## {title}`, up to the next `## `.
fn section(title: &str) -> &'static str {
    let heading = format!("\n## {title}\n");
    let start = README.find(&heading).expect("the section is in the README") + heading.len();
    let rest = &README[start..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {output:?}");
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// The binaries `cargo build` makes for the packages with these ids.
fn binaries_of(metadata: &serde_json::Value, ids: &BTreeSet<String>) -> BTreeSet<String> {
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|package| ids.contains(package["id"].as_str().unwrap()))
        .flat_map(|package| package["targets"].as_array().unwrap())
        .filter(|target| {
            target["kind"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == "bin")
        })
        .map(|target| target["name"].as_str().unwrap().to_owned())
        .collect()
}

fn ids_named(metadata: &serde_json::Value, names: &[&str]) -> BTreeSet<String> {
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|package| names.contains(&package["name"].as_str().unwrap()))
        .map(|package| package["id"].as_str().unwrap().to_owned())
        .collect()
}

fn default_members(metadata: &serde_json::Value) -> BTreeSet<String> {
    metadata["workspace_default_members"]
        .as_array()
        .expect("cargo 1.71 or newer lists the default members")
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn cargo_run_release_starts_the_gateway() {
    assert!(section("Run it").contains("\ncargo run --release\n"));
    let metadata = metadata();
    let binaries = binaries_of(&metadata, &default_members(&metadata));
    assert_eq!(
        binaries,
        BTreeSet::from(["gateway".to_owned()]),
        "`cargo run` needs exactly one binary among the default members"
    );
}

#[test]
fn the_split_build_command_makes_every_binary_the_section_runs() {
    let text = section("Run the services apart");
    let build = text
        .lines()
        .find(|line| line.starts_with("cargo build"))
        .expect("the section says how to build");
    assert!(build.contains("--release"), "{build}");
    let words: Vec<&str> = build.split_whitespace().collect();
    let packages: Vec<&str> = words
        .windows(2)
        .filter(|pair| pair[0] == "-p" || pair[0] == "--package")
        .map(|pair| pair[1])
        .collect();
    let metadata = metadata();
    let selected = if words.contains(&"--workspace") {
        ids_named(&metadata, &metadata_names(&metadata))
    } else if packages.is_empty() {
        default_members(&metadata)
    } else {
        ids_named(&metadata, &packages)
    };
    let built = binaries_of(&metadata, &selected);

    let run: BTreeSet<String> = text
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("target/release/"))
        .map(str::to_owned)
        .collect();
    assert!(run.len() >= 4, "the section runs the binaries: {run:?}");
    let missing: Vec<_> = run.difference(&built).collect();
    assert!(
        missing.is_empty(),
        "`{build}` does not build {missing:?}; it builds {built:?}"
    );
}

fn metadata_names(metadata: &serde_json::Value) -> Vec<&str> {
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| package["name"].as_str().unwrap())
        .collect()
}

/// docker-compose.yml builds the image once and runs it four times, keeping the
/// start order; `docker-compose config` (Debian's docker-compose) reads it.
#[test]
fn docker_compose_builds_the_image_once() {
    let output = std::process::Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output();
    let Ok(output) = output else {
        panic!("docker-compose is needed on PATH for this test; see .ci/run");
    };
    let config = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "docker-compose config: {output:?}");
    let count = |needle: &str| config.lines().filter(|l| l.trim() == needle).count();
    assert_eq!(
        count("build:"),
        1,
        "one build, not one per service:\n{config}"
    );
    assert_eq!(count("image: agora:latest"), 4, "{config}");
    assert_eq!(
        count("pull_policy: never"),
        3,
        "the others never pull:\n{config}"
    );
    assert!(section("Run the services apart").contains("BuildKit"));
}

/// proto/README.md's Python command, as written, from a fresh copy of the
/// repository's root (only `proto/` in it): it makes stubs that import.
#[tokio::test]
async fn the_proto_readme_python_command_makes_stubs_that_import() {
    system_tests::process::require_tools(&["python3"]);
    let root = std::env::temp_dir().join(format!("agora-stubs-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&root).unwrap();
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let script = format!(
        "cd '{root}'\nln -s '{proto}' proto\n{example}\n\
         cd out && python3 -c 'import agora.posts.v1.posts_pb2_grpc, agora.auth.v1.auth_pb2_grpc; print(\"imported\")'",
        root = root.display(),
        example = system_tests::process::proto_readme_example("python-stubs"),
    );
    let printed = system_tests::process::run_script(&script).await;
    let _ = std::fs::remove_dir_all(&root);
    assert!(printed.contains("imported"), "{printed}");
}

/// proto/README.md's `buf generate`, as written, in a copy of `proto/`: stubs for
/// every language of `buf.gen.yaml`, under the names the files' options give them
/// (the Python ones import; the Java ones compile and run in the gateway's
/// `java_client` test). Each one-language command makes exactly what the
/// whole run makes for its language.
#[tokio::test]
async fn the_proto_readme_buf_generate_makes_stubs_for_every_language_alone_or_together() {
    use system_tests::process::{
        in_proto_copy, proto_readme_example, require_programs, require_tools, run_script,
    };
    require_tools(&[
        "buf",
        "protoc",
        "python3",
        "protoc-gen-go",
        "protoc-gen-go-grpc",
        "protoc-gen-es",
    ]);
    require_programs(&["grpc_python_plugin", "grpc_java_plugin"]);
    let root = std::env::temp_dir().join(format!("agora-buf-gen-{}", uuid::Uuid::now_v7()));
    let every = proto_readme_example("stubs-all");
    let [python, java, go, typescript] =
        ["stubs-python", "stubs-java", "stubs-go", "stubs-typescript"].map(proto_readme_example);
    let commands = format!(
        "{every}
         (cd gen/python && PYTHONDONTWRITEBYTECODE=1 python3 -c 'import agora.posts.v1.posts_pb2_grpc, \
           agora.auth.v1.users_pb2_grpc, agora.auth.v1.auth_pb2_grpc, \
           agora.votes.v1.votes_pb2_grpc, agora.errors.v1.errors_pb2, \
           google.rpc.error_details_pb2; print(\"python imported\")')
         grep -l '^package postsv1$' gen/go/agora/posts/v1/posts.pb.go
         grep -l '\"github.com/agora-social/agora/gen/go/agora/auth/v1\"' \
           gen/go/agora/posts/v1/posts.pb.go
         grep -l 'PostServiceClient' gen/go/agora/posts/v1/posts_grpc.pb.go
         grep -l '^package social.agora.posts.v1;$' gen/java/social/agora/posts/v1/Post.java
         grep -l 'class PostServiceGrpc' gen/java/social/agora/posts/v1/PostServiceGrpc.java
         grep -l 'class Status ' gen/java/com/google/rpc/Status.java
         grep -l 'export const PostService:' gen/es/agora/posts/v1/posts_pb.ts
         mv gen every
         {python}
         {java}
         {go}
         {typescript}
         diff -r every/python gen/python
         diff -r every/java gen/java
         diff -r -x google every/go gen/go
         [ ! -e gen/go/google ]
         diff -r every/es gen/es
         echo 'one language alone: the same stubs'"
    );
    let printed = run_script(&in_proto_copy(&root, &commands)).await;
    let _ = std::fs::remove_dir_all(&root);
    for expected in ["python imported", "one language alone: the same stubs"] {
        assert!(printed.contains(expected), "{expected:?} in:\n{printed}");
    }
}
