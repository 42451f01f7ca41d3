//! Prints the DynamoDB capacity cost of the main operations (docs/cost.md),
//! counted on fresh tables on the emulator (`localstack/start.sh` first).
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let prefix = chat_tests::fresh_tables().await?;
    let tables = chat_dynamo::connect(&prefix).await?;
    let rows = chat_tests::cost::measure(&tables).await?;
    println!("{}", chat_tests::cost::markdown(&rows));
    Ok(())
}
