#[tokio::main]
async fn main() -> std::process::ExitCode {
    gateway::main().await
}
