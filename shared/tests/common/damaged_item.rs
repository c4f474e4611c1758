//! A connection item of the wrong shape in the state table, as a hand edit
//! or a future version could leave it. The store's tests and the admin
//! API's tests both check what such an item does, so both include this file
//! by path; it needs nothing but the DynamoDB client.

/// Writes connection `broken` into `table` with an `auth` no version knows.
pub(crate) async fn put_damaged_connection(ddb: &aws_sdk_dynamodb::Client, table: &str) {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    ddb.put_item()
        .table_name(table)
        .item("pk", A::S("conn#broken".into()))
        .item("sk", A::S("conn".into()))
        .item("kind", A::S("connection".into()))
        .item("id", A::S("broken".into()))
        .item("auth", A::S("carrier_pigeon".into()))
        .send()
        .await
        .unwrap();
}
