//! The fake driven through the real `aws-sdk-connect` client: what the SDK
//! sends is accepted when it is valid, refused with the documented error
//! when it is not, and the refusal comes back to the caller as the SDK's
//! typed error. Attachments come from moto S3 presigned URLs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use aws_sdk_connect::config::http::HttpResponse;
use aws_sdk_connect::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_connect::operation::get_attached_file::builders::GetAttachedFileFluentBuilder;
use aws_sdk_connect::operation::get_contact_attributes::builders::GetContactAttributesFluentBuilder;
use aws_sdk_connect::operation::list_contact_references::builders::ListContactReferencesFluentBuilder;
use aws_sdk_connect::operation::start_email_contact::StartEmailContactError;
use aws_sdk_connect::operation::start_email_contact::StartEmailContactOutput;
use aws_sdk_connect::operation::start_email_contact::builders::StartEmailContactFluentBuilder;
use aws_sdk_connect::operation::start_task_contact::builders::StartTaskContactFluentBuilder;
use aws_sdk_connect::types::{
    EmailAddressInfo, EmailAttachment, EmailHeaderType, InboundEmailContent, InboundMessageSourceType,
    InboundRawMessage, Reference, ReferenceType,
};
use connect_fake::{AttachmentLimits, Fake, Operation};

const INSTANCE: &str = "11111111-2222-3333-4444-555555555555";
const FLOW: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const QUEUE_ADDRESS: &str = "support@contoso.email.connect.aws";

async fn fake() -> Fake {
    let fake = Fake::start().await;
    fake.add_instance(INSTANCE);
    fake.add_flow(INSTANCE, FLOW, "relay365 inbound");
    fake.add_email_address(INSTANCE, "email-1", QUEUE_ADDRESS, None);
    fake
}

/// The fake and a client of it with the test credentials.
async fn started() -> (Fake, aws_sdk_connect::Client) {
    let fake = fake().await;
    let client = aws_sdk_connect::Client::new(&relay365_testkit::sdk_config(&fake.url()).await);
    (fake, client)
}

/// A client signing with other credentials.
async fn client_with(fake: &Fake, key: &str, secret: &str) -> aws_sdk_connect::Client {
    let sdk = relay365_testkit::sdk_config(&fake.url()).await;
    let creds = aws_credential_types::Credentials::new(key, secret, None, None, "test");
    let config = aws_sdk_connect::config::Builder::from(&sdk)
        .credentials_provider(creds)
        .build();
    aws_sdk_connect::Client::from_conf(config)
}

/// The error code of a refused call.
fn code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, SdkError<E, HttpResponse>>,
) -> String {
    let err = result.expect_err("the call must be refused");
    err.as_service_error()
        .and_then(|e| e.code())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no service error: {err:?}"))
}

fn task(client: &aws_sdk_connect::Client) -> StartTaskContactFluentBuilder {
    client
        .start_task_contact()
        .instance_id(INSTANCE)
        .contact_flow_id(FLOW)
        .name("Order 4411 is late")
        .description("Hello, my order has not arrived.")
        .references(
            "mail",
            Reference::builder()
                .r#type(ReferenceType::Url)
                .value("https://outlook.office.com/mail/id/AAMk")
                .build()
                .unwrap(),
        )
        .attributes("sender", "ann@example.com")
        .attributes("conversation_id", "AAQk")
}

#[tokio::test]
async fn a_valid_task_is_started_and_recorded() {
    let (fake, client) = started().await;
    let out = task(&client).client_token("evt_1").send().await.unwrap();
    let id = out.contact_id().unwrap().to_string();
    let contacts = fake.contacts();
    assert_eq!(contacts.len(), 1);
    let c = &contacts[0];
    assert_eq!(c.operation, Operation::StartTaskContact);
    assert_eq!(c.contact_id, id);
    assert_eq!(c.instance_id, INSTANCE);
    assert_eq!(c.contact_flow_id, FLOW);
    assert_eq!(c.request["Name"], "Order 4411 is late");
    assert_eq!(c.request["References"]["mail"]["Type"], "URL");
    assert_eq!(c.request["Attributes"]["sender"], "ann@example.com");
    assert!(fake.refused().is_empty());

    // A later task may name it as its related contact; an unknown one is refused.
    task(&client).related_contact_id(&id).send().await.unwrap();
    assert_eq!(
        fake.contacts()[1].related_contact_id.as_deref(),
        Some(id.as_str())
    );
    let unknown = task(&client).related_contact_id("nope").send().await;
    assert_eq!(code(unknown), "ResourceNotFoundException");
}

#[tokio::test]
async fn the_same_client_token_gives_the_same_contact() {
    let (fake, client) = started().await;
    let first = task(&client).client_token("evt_7").send().await.unwrap();
    let second = task(&client).client_token("evt_7").send().await.unwrap();
    assert_eq!(first.contact_id(), second.contact_id());
    assert_eq!(fake.contacts().len(), 1);

    // The same token with another request is refused.
    let other = task(&client).client_token("evt_7").name("Another").send().await;
    assert_eq!(code(other), "InvalidRequestException");
    assert_eq!(fake.contacts().len(), 1);
}

#[tokio::test]
async fn task_fields_are_held_to_the_reference_s_constraints() {
    let (fake, client) = started().await;
    let no_name = client
        .start_task_contact()
        .instance_id(INSTANCE)
        .contact_flow_id(FLOW)
        .send()
        .await;
    let err = no_name.expect_err("a task needs a name");
    assert!(
        err.as_service_error().unwrap().is_invalid_parameter_exception(),
        "{err:?}"
    );

    let long_description = task(&client).description("d".repeat(4097)).send().await;
    assert_eq!(code(long_description), "InvalidParameterException");
    task(&client).description("d".repeat(4096)).send().await.unwrap();

    let long_name = task(&client).name("n".repeat(1025)).send().await;
    assert_eq!(code(long_name), "InvalidParameterException");

    let attachment_ref = task(&client)
        .references(
            "file",
            Reference::builder()
                .r#type(ReferenceType::Attachment)
                .value("x")
                .build()
                .unwrap(),
        )
        .send()
        .await;
    assert_eq!(code(attachment_ref), "InvalidParameterException");

    let bad_key = task(&client).attributes("bad key", "x").send().await;
    assert_eq!(code(bad_key), "InvalidParameterException");

    let unknown_flow = task(&client).contact_flow_id("no-such-flow").send().await;
    let err = unknown_flow.expect_err("unknown flow");
    assert!(
        err.as_service_error().unwrap().is_resource_not_found_exception(),
        "{err:?}"
    );

    let unknown_instance = task(&client).instance_id("no-such-instance").send().await;
    assert_eq!(code(unknown_instance), "ResourceNotFoundException");

    assert_eq!(fake.contacts().len(), 1);
    let refused = fake.refused();
    assert_eq!(refused.len(), 7);
    assert!(
        refused
            .iter()
            .all(|r| r.operation == Some(Operation::StartTaskContact))
    );
    assert!(refused[0].reason.contains("'name'"), "{:?}", refused[0]);
}

#[tokio::test]
async fn a_bad_signature_is_refused_before_anything_else() {
    let fake = fake().await;
    let wrong_secret = client_with(&fake, "test", "not-the-secret").await;
    assert_eq!(
        code(task(&wrong_secret).send().await),
        "InvalidSignatureException"
    );
    let unknown_key = client_with(&fake, "AKIDUNKNOWN", "test").await;
    assert_eq!(
        code(task(&unknown_key).send().await),
        "UnrecognizedClientException"
    );

    let sdk = relay365_testkit::sdk_config(&fake.url()).await;
    let other_region = aws_sdk_connect::config::Builder::from(&sdk)
        .region(aws_sdk_connect::config::Region::new("eu-west-1"))
        .build();
    let other_region = aws_sdk_connect::Client::from_conf(other_region);
    assert_eq!(
        code(task(&other_region).send().await),
        "InvalidSignatureException"
    );

    let unsigned = reqwest::Client::new()
        .put(format!("{}/contact/task", fake.url()))
        .header("content-type", "application/json")
        .body(r#"{"InstanceId":"x","Name":"y"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 403);
    assert_eq!(
        unsigned.headers()["x-amzn-errortype"],
        "MissingAuthenticationTokenException"
    );

    assert!(fake.contacts().is_empty());
    assert!(fake.refused().iter().all(|r| r.status == 403));
}

#[tokio::test]
async fn throttling_and_server_errors_are_injected_and_retries_stay_idempotent() {
    let (fake, client) = started().await; // two attempts
    fake.throttle_next(5);
    let throttled = task(&client).send().await;
    let err = throttled.expect_err("throttled");
    assert!(
        err.as_service_error().unwrap().is_throttling_exception(),
        "{err:?}"
    );
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 429);
    assert_eq!(fake.refused().len(), 2);
    fake.throttle_next(0);

    // A 500 is retried by the SDK with the same ClientToken: one contact.
    fake.fail_next(1, 500);
    task(&client).send().await.unwrap();
    assert_eq!(fake.contacts().len(), 1);
    let refused = fake.refused();
    assert_eq!(refused.last().unwrap().error, "InternalServiceException");
    assert_eq!(refused.last().unwrap().status, 500);
}

#[tokio::test]
async fn describe_calls_answer_what_the_sdk_parses() {
    let (_fake, client) = started().await;
    let describe_instance = |id: &str| client.describe_instance().instance_id(id);
    let describe_flow = |id: &str| {
        client
            .describe_contact_flow()
            .instance_id(INSTANCE)
            .contact_flow_id(id)
    };
    let instance = describe_instance(INSTANCE).send().await.unwrap();
    let instance = instance.instance().unwrap();
    assert_eq!(instance.id(), Some(INSTANCE));
    assert!(instance.arn().unwrap().ends_with(&format!("instance/{INSTANCE}")));
    assert_eq!(instance.instance_status().unwrap().as_str(), "ACTIVE");
    assert!(instance.created_time().is_some());

    let flow = describe_flow(FLOW).send().await.unwrap();
    let flow = flow.contact_flow().unwrap();
    assert_eq!(flow.name(), Some("relay365 inbound"));
    assert_eq!(flow.r#type().unwrap().as_str(), "CONTACT_FLOW");

    let missing = describe_flow("missing").send().await;
    assert_eq!(code(missing), "ResourceNotFoundException");
    let missing = describe_instance("missing").send().await;
    assert_eq!(code(missing), "ResourceNotFoundException");

    let address = client
        .describe_email_address()
        .instance_id(INSTANCE)
        .email_address_id("email-1")
        .send()
        .await
        .unwrap();
    assert_eq!(address.email_address(), Some(QUEUE_ADDRESS));

    let found = client
        .search_email_addresses()
        .instance_id(INSTANCE)
        .search_criteria(
            aws_sdk_connect::types::EmailAddressSearchCriteria::builder()
                .string_condition(
                    aws_sdk_connect::types::StringCondition::builder()
                        .field_name("email_address")
                        .value(QUEUE_ADDRESS.to_uppercase())
                        .comparison_type(aws_sdk_connect::types::StringComparisonType::Exact)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(found.email_addresses().len(), 1);
    assert_eq!(found.email_addresses()[0].email_address_id(), Some("email-1"));
}

fn email(client: &aws_sdk_connect::Client) -> StartEmailContactFluentBuilder {
    client
        .start_email_contact()
        .instance_id(INSTANCE)
        .contact_flow_id(FLOW)
        .from_email_address(address("ann@example.com", Some("Ann")))
        .destination_email_address(QUEUE_ADDRESS)
        .email_message(raw_content(
            "Order 4411",
            "<p>Where is my order?</p>",
            "text/html",
            Some("<m1@example.com>"),
        ))
}

/// An email address, with a display name when one is given.
fn address(email: impl Into<String>, display_name: Option<&str>) -> EmailAddressInfo {
    EmailAddressInfo::builder()
        .email_address(email)
        .set_display_name(display_name.map(str::to_string))
        .build()
        .unwrap()
}

/// A raw inbound message, with a Message-ID header when one is given.
fn raw_content(
    subject: impl Into<String>,
    body: &str,
    content_type: &str,
    message_id: Option<&str>,
) -> InboundEmailContent {
    let mut raw = InboundRawMessage::builder()
        .subject(subject)
        .body(body)
        .content_type(content_type);
    if let Some(id) = message_id {
        raw = raw.headers(EmailHeaderType::MessageId, id);
    }
    InboundEmailContent::builder()
        .message_source_type(InboundMessageSourceType::Raw)
        .raw_message(raw.build().unwrap())
        .build()
        .unwrap()
}

/// moto S3 with a bucket; presigned GET URLs of objects put in it.
struct Bucket {
    aws: relay365_testkit::Aws,
    s3: aws_sdk_s3::Client,
}

impl Bucket {
    async fn start() -> Self {
        let aws = relay365_testkit::Aws::start().await;
        let sdk = aws.sdk_config().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        s3.create_bucket().bucket("attachments").send().await.unwrap();
        Self { aws, s3 }
    }

    async fn presigned(&self, key: &str, bytes: &[u8]) -> String {
        self.s3
            .put_object()
            .bucket("attachments")
            .key(key)
            .body(bytes.to_vec().into())
            .send()
            .await
            .unwrap();
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(900)).unwrap();
        let request = self
            .s3
            .get_object()
            .bucket("attachments")
            .key(key)
            .presigned(config)
            .await
            .unwrap();
        request.uri().to_string()
    }
}

fn attachment(name: &str, url: &str) -> EmailAttachment {
    EmailAttachment::builder()
        .file_name(name)
        .s3_url(url)
        .build()
        .unwrap()
}

/// The standard email with one attachment, put in the bucket under
/// `support/x/` first.
async fn email_with_file(
    client: &aws_sdk_connect::Client,
    bucket: &Bucket,
    name: &str,
    bytes: &[u8],
) -> Result<StartEmailContactOutput, SdkError<StartEmailContactError, HttpResponse>> {
    let url = bucket.presigned(&format!("support/x/{name}"), bytes).await;
    email(client).attachments(attachment(name, &url)).send().await
}

#[tokio::test]
async fn an_email_contact_downloads_its_attachments() {
    let (fake, client) = started().await;
    let bucket = Bucket::start().await;
    let pdf = bucket
        .presigned("support/evt_1/invoice.pdf", b"%PDF-1.7 invoice")
        .await;
    let txt = bucket.presigned("support/evt_1/notes.txt", b"line one\n").await;
    let out = email(&client)
        .attachments(attachment("invoice.pdf", &pdf))
        .attachments(attachment("Notes.TXT", &txt))
        .client_token("evt_1")
        .send()
        .await
        .unwrap();
    let contacts = fake.contacts();
    assert_eq!(contacts.len(), 1);
    let c = &contacts[0];
    assert_eq!(Some(c.contact_id.as_str()), out.contact_id());
    assert_eq!(c.operation, Operation::StartEmailContact);
    assert_eq!(c.attachments.len(), 2);
    assert_eq!(c.attachments[0].file_name, "invoice.pdf");
    assert_eq!(c.attachments[0].bytes, b"%PDF-1.7 invoice");
    assert_eq!(c.attachments[1].bytes, b"line one\n");
    assert_eq!(
        c.request["EmailMessage"]["RawMessage"]["Headers"]["MESSAGE_ID"],
        "<m1@example.com>"
    );

    // A reply in the same conversation is related to it.
    email(&client)
        .related_contact_id(&c.contact_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        fake.contacts()[1].related_contact_id.as_deref(),
        Some(c.contact_id.as_str())
    );

    // The same token with another request: IdempotencyException, as documented.
    let reused = email(&client).client_token("evt_1").name("changed").send().await;
    let err = reused.expect_err("token reused");
    assert!(
        err.as_service_error().unwrap().is_idempotency_exception(),
        "{err:?}"
    );
}

#[tokio::test]
async fn email_attachments_are_held_to_connect_s_quotas() {
    let (fake, client) = started().await;
    let bucket = Bucket::start().await;

    let mut eleven = email(&client);
    for i in 0..11 {
        eleven = eleven.attachments(attachment(
            &format!("f{i}.pdf"),
            "http://127.0.0.1:9/never-fetched",
        ));
    }
    let err = eleven.send().await.expect_err("11 attachments");
    assert!(
        err.as_service_error().unwrap().is_invalid_request_exception(),
        "{err:?}"
    );
    assert!(fake.refused()[0].reason.contains("at most 10 attachments"));

    let wrong_type = email_with_file(&client, &bucket, "run.exe", b"MZ").await;
    assert_eq!(code(wrong_type), "InvalidRequestException");
    assert!(fake.refused()[1].reason.contains("supported file type"));

    fake.set_attachment_limits(
        INSTANCE,
        AttachmentLimits {
            max_bytes: 1024,
            ..AttachmentLimits::default()
        },
    );
    let too_large = email_with_file(&client, &bucket, "big.pdf", &[7u8; 1025]).await;
    assert_eq!(code(too_large), "InvalidRequestException");
    assert!(fake.refused()[2].reason.contains("maximum file size"));
    email_with_file(&client, &bucket, "fits.pdf", &[7u8; 1024])
        .await
        .unwrap();

    let gone = email(&client)
        .attachments(attachment(
            "gone.pdf",
            &format!("{}/attachments/missing.pdf", bucket.aws.url()),
        ))
        .send()
        .await;
    assert_eq!(code(gone), "InvalidRequestException");

    assert_eq!(fake.contacts().len(), 1);
    assert_eq!(fake.contacts()[0].attachments[0].bytes.len(), 1024);
}

#[tokio::test]
async fn email_fields_are_held_to_the_reference_s_constraints() {
    let (fake, client) = started().await;
    let not_ours = email(&client)
        .destination_email_address("help@elsewhere.com")
        .send()
        .await;
    assert_eq!(code(not_ours), "ResourceNotFoundException");

    let bad_from = email(&client)
        .from_email_address(address("not-an-address", None))
        .send()
        .await;
    assert_eq!(code(bad_from), "InvalidRequestException");

    let long_subject = email(&client)
        .email_message(raw_content("s".repeat(999), "b", "text/plain", None))
        .send()
        .await;
    assert_eq!(code(long_subject), "InvalidRequestException");

    // The destination and 49 more recipients at most.
    let recipients = |n: usize| {
        let to: Vec<EmailAddressInfo> = (0..n)
            .map(|i| address(format!("r{i}@example.com"), None))
            .collect();
        aws_sdk_connect::types::InboundAdditionalRecipients::builder()
            .set_to_addresses(Some(to))
            .build()
    };
    let too_many = email(&client).additional_recipients(recipients(50)).send().await;
    assert_eq!(code(too_many), "InvalidRequestException");
    email(&client)
        .additional_recipients(recipients(49))
        .send()
        .await
        .unwrap();

    let no_flow = client
        .start_email_contact()
        .instance_id(INSTANCE)
        .from_email_address(address("ann@example.com", None))
        .destination_email_address(QUEUE_ADDRESS)
        .email_message(raw_content("s", "b", "text/plain", None))
        .send()
        .await;
    assert_eq!(code(no_flow), "InvalidRequestException");
    // With the address's own inbound flow, no ContactFlowId is needed.
    fake.add_email_address(INSTANCE, "email-2", "sales@contoso.email.connect.aws", Some(FLOW));
    email(&client)
        .set_contact_flow_id(None)
        .destination_email_address("sales@contoso.email.connect.aws")
        .send()
        .await
        .unwrap();
    assert_eq!(fake.contacts().last().unwrap().contact_flow_id, FLOW);
}

#[tokio::test]
async fn an_agent_reply_is_sent_in_the_thread_and_read_back_as_connect_documents_it() {
    let (fake, client) = started().await;
    let inbound = email(&client)
        .attributes("connection_id", "support")
        .send()
        .await
        .unwrap();
    let inbound = inbound.contact_id().unwrap().to_string();
    // Connect sends only from the instance's addresses, and answers only email contacts.
    let refused = fake
        .agent_reply(INSTANCE, &inbound, "agent@elsewhere.example", "<p>x</p>")
        .unwrap_err();
    assert_eq!(refused.kind, "InvalidRequestException");
    let task_id = task(&client).send().await.unwrap();
    let task_id = task_id.contact_id().unwrap().to_string();
    assert_eq!(
        fake.agent_reply(INSTANCE, &task_id, QUEUE_ADDRESS, "<p>x</p>")
            .unwrap_err()
            .kind,
        "InvalidRequestException"
    );
    let reply = fake
        .agent_reply(INSTANCE, &inbound, QUEUE_ADDRESS, "<p>Shipped today.</p>")
        .unwrap();
    let out = fake.outbound();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].from, QUEUE_ADDRESS);
    assert_eq!(out[0].to, "ann@example.com");
    assert_eq!(out[0].subject, "RE: Order 4411");
    assert_eq!(out[0].in_reply_to.as_deref(), Some("<m1@example.com>"));
    assert_eq!(out[0].references.as_deref(), Some("<m1@example.com>"));
    let detail = &reply.event["detail"];
    assert_eq!(reply.event["detail-type"], "Amazon Connect Contact Event");
    assert_eq!(detail["initiationMethod"], "AGENT_REPLY");
    assert_eq!(detail["relatedContactId"], inbound.as_str());

    // The inbound contact's attributes, also through the reply.
    for id in [&inbound, &reply.contact_id] {
        let attrs = attributes(&client, id).send().await.unwrap();
        assert_eq!(
            attrs
                .attributes()
                .unwrap()
                .get("connection_id")
                .map(String::as_str),
            Some("support")
        );
    }
    assert_eq!(
        code(attributes(&client, "no-such-contact").send().await),
        "ResourceNotFoundException"
    );
    // The reply's EMAIL_MESSAGE reference, then its file.
    let refs = references(&client, &reply.contact_id, ReferenceType::EmailMessage)
        .send()
        .await
        .unwrap();
    let arn = refs.reference_summary_list()[0]
        .as_email_message()
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let file_id = arn.rsplit('/').next().unwrap();
    let contact_arn = format!(
        "arn:aws:connect:us-east-1:{}:instance/{INSTANCE}/contact/{}",
        connect_fake::ACCOUNT_ID,
        reply.contact_id
    );
    let file = attached_file(&client, file_id, &contact_arn)
        .send()
        .await
        .unwrap();
    let url = file.download_url_metadata().unwrap().url().unwrap();
    let body = reqwest::get(url).await.unwrap().text().await.unwrap();
    assert_eq!(body, "<p>Shipped today.</p>");
    // What Connect refuses: another contact's file, an expiry out of range,
    // a reference type that does not exist, an unknown contact.
    let other_file = attached_file(&client, file_id, format!("{contact_arn}x"));
    assert_eq!(code(other_file.send().await), "ResourceNotFoundException");
    let long_expiry = attached_file(&client, file_id, &contact_arn).url_expiry_in_seconds(301);
    assert_eq!(code(long_expiry.send().await), "InvalidRequestException");
    let no_such_type = references(&client, &reply.contact_id, ReferenceType::from("NOT_A_TYPE"));
    assert_eq!(code(no_such_type.send().await), "InvalidParameterException");
    let no_such_contact = references(&client, "no-such-contact", ReferenceType::Url);
    assert_eq!(code(no_such_contact.send().await), "ResourceNotFoundException");
    // A download URL is the file's own: a wrong one is refused.
    let wrong = format!("{}x", url);
    assert_eq!(reqwest::get(wrong).await.unwrap().status(), 403);
    let refused: Vec<Option<Operation>> = fake.refused().iter().map(|r| r.operation).collect();
    assert_eq!(
        refused,
        vec![
            Some(Operation::GetContactAttributes),
            Some(Operation::GetAttachedFile),
            Some(Operation::GetAttachedFile),
            Some(Operation::ListContactReferences),
            Some(Operation::ListContactReferences),
        ]
    );
}

fn attributes(client: &aws_sdk_connect::Client, contact_id: &str) -> GetContactAttributesFluentBuilder {
    client
        .get_contact_attributes()
        .instance_id(INSTANCE)
        .initial_contact_id(contact_id)
}

fn references(
    client: &aws_sdk_connect::Client,
    contact_id: &str,
    reference_type: ReferenceType,
) -> ListContactReferencesFluentBuilder {
    client
        .list_contact_references()
        .instance_id(INSTANCE)
        .contact_id(contact_id)
        .reference_types(reference_type)
}

fn attached_file(
    client: &aws_sdk_connect::Client,
    file_id: &str,
    contact_arn: impl Into<String>,
) -> GetAttachedFileFluentBuilder {
    client
        .get_attached_file()
        .instance_id(INSTANCE)
        .file_id(file_id)
        .associated_resource_arn(contact_arn)
}
