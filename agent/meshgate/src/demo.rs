pub async fn run(_args: crate::cli::DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    Err("demo: not yet".into())
}
