"""Checks that template.yaml, the functions/ folder and the route table of
ARCHITECTURE.md cannot drift apart, and that every function's IAM policy is
least-privilege for secrets. Prints 'N passed, M failed' and exits non-zero
on any failure. Run by `make check-template-lint` (part of `make test`)."""

import pathlib
import json
import re
import sys

from cfnlint.decode import decode_str

ROOT = pathlib.Path(__file__).resolve().parents[2]
results = []


def check(name, ok, detail=""):
    results.append((name, bool(ok), detail))


def load_template():
    template, matches = decode_str((ROOT / "template.yaml").read_text())
    if matches:
        sys.exit(f"template.yaml does not parse: {matches}")
    return template


def routes_from_architecture():
    """(method path, function, iam) for every row of the contract's route table."""
    for candidate in (ROOT.parent / "shared" / "ARCHITECTURE.md", ROOT / "docs" / "architecture.md"):
        if candidate.exists():
            text = candidate.read_text()
            break
    else:
        sys.exit("no ARCHITECTURE.md found")
    section = text.split("### HTTP routes", 1)[1].strip("\n").split("\n\n", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for route in re.findall(r"`([A-Z]+ /[^`?]*)(?:\?[^`]*)?`", cells[0]):
            rows.append((route, cells[1], cells[2] == "IAM"))
    return rows


def ref_name(value):
    """Logical id behind a !Ref or !GetAtt X.Arn."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            att = value["Fn::GetAtt"]
            return att[0] if isinstance(att, list) else att.split(".")[0]
    return None


def statements(fn):
    out = []
    for policy in fn["Properties"].get("Policies", []):
        if isinstance(policy, dict) and "Fn::If" in policy:
            policy = policy["Fn::If"][1]
        if isinstance(policy, dict):
            out.extend(policy.get("Statement", []))
    return out


def as_list(v):
    return v if isinstance(v, list) else [v]


# The refresh-token key: who may seal and open tokens, and where the setting is.
TOKEN_CONTEXT_PURPOSE = "kms:EncryptionContext:relay365:purpose"
CRYPTO_ACTIONS = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"]


def token_users(functions):
    """Functions whose code asks the token provider for anything (`s.tokens.…`)."""
    users = set()
    for name in functions:
        for src in (ROOT / "functions" / name / "src").rglob("*.rs"):
            if re.search(r"\.tokens\s*\.\w", src.read_text()):
                users.add(name)
    return users


def grants_crypto(actions):
    import fnmatch
    return [a for a in as_list(actions) if any(fnmatch.fnmatchcase(c.lower(), a.lower()) for c in CRYPTO_ACTIONS)]


def check_token_key(t, functions):
    resources = t["Resources"]
    users = token_users(functions)
    check("the functions that use tokens", users == {"oauth-callback", "connections", "mail-dispatch", "send-mail"}, str(sorted(users)))
    key = resources.get("TokenKey", {})
    props = key.get("Properties", {})
    check("TokenKey is a symmetric KMS key", key.get("Type") == "AWS::KMS::Key" and props.get("KeySpec", "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT")
    check("TokenKey rotates", props.get("EnableKeyRotation") is True)
    roles = {f"{functions[n][0]}Role" for n in users}
    policy = props.get("KeyPolicy", {}).get("Statement", [])
    crypto_principals = set()
    for st in policy:
        granted = grants_crypto(st.get("Action", []))
        principal = st.get("Principal", {}).get("AWS")
        if not granted or st.get("Effect") != "Allow":
            continue
        names = {ref_name(p) for p in as_list(principal)}
        crypto_principals |= names
        check(f"TokenKey/{st.get('Sid')}: only data keys are made and opened", sorted(granted) == ["kms:Decrypt", "kms:GenerateDataKey"], str(granted))
        cond = st.get("Condition", {})
        check(f"TokenKey/{st.get('Sid')}: only with the refresh-token purpose", cond.get("StringEquals", {}).get(TOKEN_CONTEXT_PURPOSE) == "refresh-token", str(cond))
        keys = cond.get("ForAllValues:StringEquals", {}).get("kms:EncryptionContextKeys")
        check(f"TokenKey/{st.get('Sid')}: only the token context keys", sorted(as_list(keys or [])) == ["relay365:connection", "relay365:purpose"], str(keys))
    check("TokenKey: only the token users' roles may use it", crypto_principals == roles, f"{sorted(crypto_principals)} vs {sorted(roles)}")
    root = [st for st in policy if "iam::${AWS::AccountId}:root" in str(st.get("Principal"))]
    check("TokenKey: the account administers it", len(root) == 1 and "kms:ScheduleKeyDeletion" in as_list(root[0].get("Action")) and "kms:Put*" in as_list(root[0].get("Action")))
    check("the token key id is no global setting", "RELAY365_TOKEN_KEY_ID" not in t["Globals"]["Function"]["Environment"]["Variables"])
    for name, (lid, fn) in functions.items():
        env = fn["Properties"].get("Environment", {}).get("Variables", {})
        setting = env.get("RELAY365_TOKEN_KEY_ID")
        check(f"{name}: RELAY365_TOKEN_KEY_ID set exactly where tokens are used", (ref_name(setting) == "TokenKey") == (name in users) and (setting is None) == (name not in users), str(setting))
        kms = [st for st in statements(fn) if any(a.startswith("kms:") for a in as_list(st["Action"]))]
        if name not in users:
            check(f"{name}: no KMS permission", not kms, str(kms))
            continue
        actions = sorted(a for st in kms for a in as_list(st["Action"]))
        check(f"{name}: makes and opens data keys only", actions == ["kms:Decrypt", "kms:GenerateDataKey"], str(actions))
        for st in kms:
            cond = st.get("Condition", {})
            check(f"{name}/{st.get('Sid')}: only with the refresh-token purpose", cond.get("StringEquals", {}).get(TOKEN_CONTEXT_PURPOSE) == "refresh-token", str(cond))
            check(f"{name}/{st.get('Sid')}: only the token key (by its alias)", "-tokens" in str(cond.get("ForAnyValue:StringEquals", {}).get("kms:ResourceAliases")), str(cond))
        ddb = {a for st in statements(fn) for a in as_list(st["Action"]) if a.startswith("dynamodb:") and "conn#*" in str(st.get("Condition"))}
        check(f"{name}: may read and write sealed token items", {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"} <= ddb, str(sorted(ddb)))


def main():
    t = load_template()
    resources = t["Resources"]
    functions = {
        r["Metadata"]["BuildProperties"]["Binary"]: (lid, r)
        for lid, r in resources.items()
        if r["Type"] == "AWS::Serverless::Function"
    }
    crates = sorted(p.parent.name for p in (ROOT / "functions").glob("*/Cargo.toml"))
    check("every function crate is in the template", sorted(functions) == crates, f"{crates} vs {sorted(functions)}")
    for name, (lid, fn) in functions.items():
        check(f"{name}: Metadata BuildMethod rust-cargolambda", fn["Metadata"].get("BuildMethod") == "rust-cargolambda")
    g = t["Globals"]["Function"]
    check("provided.al2023 / arm64 / bootstrap", g["Runtime"] == "provided.al2023" and g["Architectures"] == ["arm64"] and g["Handler"] == "bootstrap")

    integrations = {lid: ref_name(r["Properties"]["IntegrationUri"]) for lid, r in resources.items() if r["Type"] == "AWS::ApiGatewayV2::Integration"}
    binary_of = {lid: name for name, (lid, _) in functions.items()}
    routes = {}
    for lid, r in resources.items():
        if r["Type"] == "AWS::ApiGatewayV2::Route":
            target = r["Properties"]["Target"]["Fn::Sub"]
            integration = re.search(r"\$\{(\w+)\}", target).group(1)
            routes[r["Properties"]["RouteKey"]] = (binary_of.get(integrations.get(integration)), r["Properties"]["AuthorizationType"])
    contract = routes_from_architecture()
    check("the contract lists routes", len(contract) >= 11, str(contract))
    for route, function, iam in contract:
        key = re.sub(r"\{[^}]+\}", lambda m: m.group(0), route)
        got = routes.get(key)
        want = (function, "AWS_IAM" if iam else "NONE")
        check(f"route {route} -> {want}", got == want, f"template has {got}")
    check("no route beyond the contract", set(routes) == {r for r, _, _ in contract}, str(set(routes) ^ {r for r, _, _ in contract}))
    for name, (lid, _) in functions.items():
        if name == "mail-dispatch":
            continue
        perm = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Permission" and ref_name(r["Properties"]["FunctionName"]) == lid]
        check(f"{name}: API Gateway may invoke it", len(perm) == 1)

    # Secrets: only the deployment's two secrets and the connection prefix; writes only where tokens are written.
    writers = {"oauth-callback", "connections", "mail-dispatch", "send-mail"}
    prefix = "secret:${SecretPrefix}tokens/*"
    for name, (lid, fn) in functions.items():
        wrote = False
        for st in statements(fn):
            actions = as_list(st["Action"])
            sm = [a for a in actions if a.startswith("secretsmanager:")]
            check(f"{name}/{st.get('Sid')}: no wildcard actions", not any(a.endswith("*") for a in actions))
            if not sm:
                continue
            check(f"{name}/{st.get('Sid')}: Allow only", st["Effect"] == "Allow")
            if sm == ["secretsmanager:ListSecrets"]:
                check(f"{name}: ListSecrets only in connections", name == "connections")
                continue
            for res in as_list(st["Resource"]):
                allowed = ref_name(res) in ("AppSecret", "SigningKey", "EventSigningSecret") or (isinstance(res, dict) and "Fn::Sub" in res and res["Fn::Sub"].endswith(prefix))
                check(f"{name}/{st.get('Sid')}: resource inside the deployment's secrets", allowed, str(res))
                if ref_name(res) in ("AppSecret", "SigningKey", "EventSigningSecret"):
                    check(f"{name}: deployment secrets are read-only", sm == ["secretsmanager:GetSecretValue"], str(sm))
            if any(a in ("secretsmanager:PutSecretValue", "secretsmanager:CreateSecret", "secretsmanager:DeleteSecret") for a in sm):
                wrote = True
        check(f"{name}: writes tokens only if it must", wrote == (name in writers), f"writes={wrote}")
    # The state table: its shape, and who may touch which items.
    table = resources.get("StateTable", {}).get("Properties", {})
    check("state table on demand", table.get("BillingMode") == "PAY_PER_REQUEST")
    check("state table keys pk/sk", [k["AttributeName"] for k in table.get("KeySchema", [])] == ["pk", "sk"])
    check("state table TTL on ttl", table.get("TimeToLiveSpecification") == {"AttributeName": "ttl", "Enabled": True})
    check("state table point-in-time recovery", table.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is True)
    indexes = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
    check("state table indexes: kind-index and due-index", sorted(indexes) == ["due-index", "kind-index"], str(sorted(indexes)))
    due = indexes.get("due-index", {})
    check("due-index: flows by kind and due_at, keys only",
          [(k["AttributeName"], k["KeyType"]) for k in due.get("KeySchema", [])] == [("kind", "HASH"), ("due_at", "RANGE")]
          and due.get("Projection") == {"ProjectionType": "KEYS_ONLY"})
    check("every index is keys only", all(i.get("Projection") == {"ProjectionType": "KEYS_ONLY"} for i in indexes.values()))
    check("every function but the webhook knows the state table", ref_name(g["Environment"]["Variables"].get("RELAY365_STATE_TABLE")) == "StateTable")
    check("no separate idempotency table", "IdempotencyTable" not in resources)
    check("no deployed function is a local run", "RELAY365_LOCAL" not in str(t))
    for name, (lid, fn) in functions.items():
        prefixes = set()
        for st in statements(fn):
            ddb = [a for a in as_list(st["Action"]) if a.startswith("dynamodb:")]
            if not ddb:
                continue
            check(f"{name}/{st.get('Sid')}: no table scans", "dynamodb:Scan" not in ddb, str(ddb))
            on_table = all(ref_name(r) == "StateTable" or (isinstance(r, dict) and "StateTable.Arn" in str(r)) for r in as_list(st["Resource"]))
            check(f"{name}/{st.get('Sid')}: only the state table", on_table, str(st["Resource"]))
            on_index = [str(r) for r in as_list(st["Resource"]) if "/index/" in str(r)]
            if on_index:
                # On an index query dynamodb:LeadingKeys is the index's partition
                # key value (the kind), so a table-key pattern (conn#*) would deny
                # every listing: index grants are their own statement, Query only,
                # on named indexes, limited to the kinds listed through them.
                check(f"{name}/{st.get('Sid')}: index grants name their indexes, not index/*",
                      all(re.search(r"/index/(kind|due)-index'?\}?$", r) for r in on_index), str(on_index))
                check(f"{name}/{st.get('Sid')}: indexes are only queried, and apart from the table",
                      ddb == ["dynamodb:Query"] and len(on_index) == len(as_list(st["Resource"])), str(ddb))
                kinds = st.get("Condition", {}).get("ForAllValues:StringEquals", {}).get("dynamodb:LeadingKeys", [])
                check(f"{name}/{st.get('Sid')}: index queries limited to the listed kinds", sorted(kinds) == ["connection", "flow"], str(st.get("Condition")))
                check(f"{name}: only connections lists through the indexes", name == "connections")
                continue
            keys = st.get("Condition", {}).get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys", [])
            check(f"{name}/{st.get('Sid')}: limited to its item types by partition key", bool(keys), str(st.get("Condition")))
            prefixes.update(keys)
            if any(a in ("dynamodb:DeleteItem", "dynamodb:BatchWriteItem") for a in ddb) and "conn#*" in keys:
                check(f"{name}: only connections deletes connection items", name == "connections")
        want = {"mail-webhook": set(), "send-mail": {"conn#*", "idem#*"}, "connections": {"conn#*", "fleet"}}.get(name, {"conn#*"})
        check(f"{name}: state items it may reach", prefixes == want, str(prefixes))
    webhook = functions["mail-webhook"][1]
    read = [ref_name(r) for st in statements(webhook) for r in as_list(st["Resource"]) if any(a.startswith("secretsmanager:") for a in as_list(st["Action"]))]
    check("mail-webhook reads only the signing key", read == ["SigningKey"], str(read))
    event_readers = sorted(name for name, (_, fn) in functions.items() for st in statements(fn) for r in as_list(st["Resource"]) if ref_name(r) == "EventSigningSecret")
    check("only mail-dispatch reads the event signing secret", event_readers == ["mail-dispatch"], str(event_readers))
    s3_users = sorted(name for name, (_, fn) in functions.items() for st in statements(fn) if any(a.startswith("s3:") for a in as_list(st["Action"])))
    check("only send-mail and mail-dispatch use the attachments bucket", s3_users == ["mail-dispatch", "send-mail"], str(s3_users))
    staging = [st for st in statements(functions["mail-dispatch"][1]) if any(a.startswith("s3:") for a in as_list(st["Action"]))]
    check("mail-dispatch only stages Connect attachments under connect/",
          len(staging) == 1 and sorted(as_list(staging[0]["Action"])) == ["s3:GetObject", "s3:PutObject"]
          and as_list(staging[0]["Resource"]) == [{"Fn::Sub": "${AttachmentsBucket.Arn}/connect/*"}], str(staging))
    staging_policy = [p for p in functions["mail-dispatch"][1]["Properties"].get("Policies", []) if isinstance(p, dict) and "Fn::If" in p and "s3:" in str(p)]
    check("the staging grant only with connect-email targets and the bucket",
          len(staging_policy) == 1 and staging_policy[0]["Fn::If"][0] == "WithConnectEmailBucket"
          and t["Conditions"].get("WithConnectEmailBucket") == {"Fn::And": [{"Condition": "WithConnectEmail"}, {"Condition": "WithBucket"}]}, str(staging_policy))
    # Amazon Connect: only mail-dispatch starts contacts (tasks, and email
    # contacts), only on the instance the deployment names, and only when it
    # names one (email contacts only when it names an email address too).
    connect_grants = [(name, st) for name, (_, fn) in functions.items() for st in statements(fn)
                      if any(a.startswith("connect:") for a in as_list(st["Action"]))]
    check("only mail-dispatch may call Amazon Connect", sorted({n for n, _ in connect_grants}) == ["mail-dispatch"], str([n for n, _ in connect_grants]))
    by_sid = {st.get("Sid"): st for _, st in connect_grants}
    check("mail-dispatch may only start tasks and email contacts and read an agent's reply back",
          sorted(by_sid) == ["ReadAgentReplies", "ReadAgentReplyFiles", "StartConnectEmailContacts", "StartConnectTasks"]
          and as_list(by_sid["StartConnectTasks"]["Action"]) == ["connect:StartTaskContact"]
          and as_list(by_sid["StartConnectEmailContacts"]["Action"]) == ["connect:StartEmailContact"]
          and sorted(as_list(by_sid["ReadAgentReplies"]["Action"])) == ["connect:GetContactAttributes", "connect:ListContactReferences"]
          and as_list(by_sid["ReadAgentReplyFiles"]["Action"]) == ["connect:GetAttachedFile"],
          str({sid: st["Action"] for sid, st in by_sid.items()}))
    check("no Connect grant has a condition to widen or a Deny to rely on",
          all(st.get("Effect") == "Allow" and "Condition" not in st and "NotResource" not in st and "NotAction" not in st for _, st in connect_grants))
    instance = "arn:${AWS::Partition}:connect:${AWS::Region}:${AWS::AccountId}:instance/${ConnectInstanceId}/"
    def connect_arns(res):
        if isinstance(res, dict) and "Fn::If" in res:
            return [a for branch in res["Fn::If"][1:] for a in connect_arns(branch)]
        return [res["Fn::Sub"] if isinstance(res, dict) and "Fn::Sub" in res else str(res)]
    def kinds(st):
        return sorted({a.split("/")[-2] for r in as_list(st["Resource"]) for a in connect_arns(r)})
    starts = {sid: st for sid, st in by_sid.items() if sid.startswith("Start")}
    arns = [a for st in starts.values() for r in as_list(st["Resource"]) for a in connect_arns(r)]
    every_arn = [a for _, st in connect_grants for r in as_list(st["Resource"]) for a in connect_arns(r)]
    check("every Connect grant is on the deployment's instance only", bool(every_arn) and all(a.startswith(instance) and a.count("${ConnectInstanceId}") == 1 for a in every_arn), str(every_arn))
    check("replies are read on the instance's contacts (and its files) only",
          [connect_arns(r) for r in as_list(by_sid.get("ReadAgentReplies", {"Resource": []})["Resource"])] == [[instance + "contact/*"]]
          and [connect_arns(r) for r in as_list(by_sid.get("ReadAgentReplyFiles", {"Resource": []})["Resource"])] == [[instance + "*"]])
    check("contacts are started on the deployment's instance only", bool(arns) and all(a.startswith(instance) and a.count("${ConnectInstanceId}") == 1 and a.count("*") <= 1 and a.split("/")[-2] in ("contact-flow", "contact", "email-address") for a in arns), str(arns))
    check("tasks: the flow and the related contact, nothing else", kinds(by_sid.get("StartConnectTasks", {"Resource": []})) == ["contact", "contact-flow"], str(kinds(by_sid.get("StartConnectTasks", {"Resource": []}))))
    check("email contacts: the flow, the instance's address and the related contact, nothing else",
          kinds(by_sid.get("StartConnectEmailContacts", {"Resource": []})) == ["contact", "contact-flow", "email-address"], str(kinds(by_sid.get("StartConnectEmailContacts", {"Resource": []}))))
    for sid, st in starts.items():
        flows = [r for r in as_list(st["Resource"]) if "contact-flow" in str(r)]
        check(f"{sid}: the one flow when ConnectContactFlowId is set, else the instance's flows",
              len(flows) == 1 and isinstance(flows[0], dict) and "Fn::If" in flows[0] and flows[0]["Fn::If"][0] == "WithConnectFlow"
              and connect_arns(flows[0]["Fn::If"][1]) == [instance + "contact-flow/${ConnectContactFlowId}"]
              and connect_arns(flows[0]["Fn::If"][2]) == [instance + "contact-flow/*"], str(flows))
    dispatch_policies = functions["mail-dispatch"][1]["Properties"].get("Policies", [])
    conditional = {p["Fn::If"][0]: p for p in dispatch_policies if isinstance(p, dict) and "Fn::If" in p and "connect:" in str(p)}
    def statement_of(policy):
        return [st.get("Sid") for st in policy["Fn::If"][1].get("Statement", [])]
    not_empty = lambda param: {"Fn::Not": [{"Fn::Equals": [{"Ref": param}, ""]}]}
    check("task permissions only when ConnectInstanceId is set",
          "WithConnect" in conditional and statement_of(conditional["WithConnect"]) == ["StartConnectTasks"]
          and conditional["WithConnect"]["Fn::If"][2] == {"Ref": "AWS::NoValue"}
          and t["Conditions"].get("WithConnect") == not_empty("ConnectInstanceId")
          and t["Parameters"].get("ConnectInstanceId", {}).get("Default") == "", str(conditional.get("WithConnect")))
    check("email-contact permissions only when ConnectInstanceId and ConnectEmailAddress are set",
          "WithConnectEmail" in conditional and statement_of(conditional["WithConnectEmail"]) == ["StartConnectEmailContacts", "ReadAgentReplies", "ReadAgentReplyFiles"]
          and conditional["WithConnectEmail"]["Fn::If"][2] == {"Ref": "AWS::NoValue"}
          and t["Conditions"].get("WithConnectEmail") == {"Fn::And": [{"Condition": "WithConnect"}, not_empty("ConnectEmailAddress")]}
          and t["Parameters"].get("ConnectEmailAddress", {}).get("Default") == "", str(conditional.get("WithConnectEmail")))
    check("no Connect permission outside those two conditions",
          sorted(conditional) == ["WithConnect", "WithConnectEmail"]
          and all("connect:" not in str(p) for p in dispatch_policies if p not in conditional.values()), str(sorted(conditional)))
    # The agent-reply path: a rule on the instance's email replies, only with
    # connect-email targets, invoking mail-dispatch, failures kept and alarmed.
    res = t["Resources"]
    rule = res.get("ConnectReplyRule", {})
    pattern = rule.get("Properties", {}).get("EventPattern", {})
    target = (rule.get("Properties", {}).get("Targets") or [{}])[0]
    check("the agent-reply rule: only with connect-email targets, the instance's email replies, to mail-dispatch",
          rule.get("Condition") == "WithConnectEmail"
          and pattern.get("source") == ["aws.connect"]
          and pattern.get("detail", {}).get("channel") == ["EMAIL"]
          and pattern.get("detail", {}).get("initiationMethod") == ["AGENT_REPLY"]
          and connect_arns(pattern.get("detail", {}).get("instanceArn", [""])[0]) == [instance.rstrip("/")]
          and target.get("Arn") == {"Fn::GetAtt": ["MailDispatchFunction", "Arn"]}, str(rule))
    check("a reply that cannot be filed ends in a dead-letter queue with an alarm",
          target.get("DeadLetterConfig", {}).get("Arn") == {"Fn::GetAtt": ["ConnectReplyDeadLetterQueue", "Arn"]}
          and res.get("ConnectReplyDeadLetterQueue", {}).get("Condition") == "WithConnectEmail"
          and any((r.get("Type") == "AWS::CloudWatch::Alarm" and "ConnectReplyDeadLetterQueue" in str(r.get("Properties", {}).get("Dimensions"))) for r in res.values()),
          str(target))
    permission = res.get("ConnectReplyPermission", {}).get("Properties", {})
    check("only the reply rule may invoke mail-dispatch through EventBridge",
          permission.get("Principal") == "events.amazonaws.com" and permission.get("SourceArn") == {"Fn::GetAtt": ["ConnectReplyRule", "Arn"]}, str(permission))
    dispatch_events = functions["mail-dispatch"][1]["Properties"]["Events"]
    check("dispatch reports partial batch failures", any(e["Properties"].get("FunctionResponseTypes") == ["ReportBatchItemFailures"] for e in dispatch_events.values()))
    dispatch_fn = functions["mail-dispatch"][1]["Properties"]
    told = dispatch_fn.get("Environment", {}).get("Variables", {}).get("RELAY365_FUNCTION_TIMEOUT_SECONDS")
    check("dispatch knows its own Timeout (runtimes without a deadline)", told is not None and int(told) == int(dispatch_fn["Timeout"]),
          f"RELAY365_FUNCTION_TIMEOUT_SECONDS={told}, Timeout={dispatch_fn['Timeout']}")
    conn_fn = functions["connections"][1]["Properties"]
    told = conn_fn.get("Environment", {}).get("Variables", {}).get("RELAY365_FUNCTION_TIMEOUT_SECONDS")
    check("connections knows its own Timeout (the scheduled run's budget)", told is not None and int(told) == int(conn_fn["Timeout"]),
          f"RELAY365_FUNCTION_TIMEOUT_SECONDS={told}, Timeout={conn_fn['Timeout']}")
    rate = re.match(r"rate\((\d+) (minute|minutes|hour|hours)\)", t["Parameters"]["SweepSchedule"]["Default"])
    every = int(rate.group(1)) * (60 if rate.group(2).startswith("minute") else 3600) if rate else 0
    check("one scheduled run ends before the next begins (default schedule)", every >= int(conn_fn["Timeout"]), f"every {every} s, Timeout {conn_fn['Timeout']}")
    q = resources["NotificationQueue"]["Properties"]
    check("the queue is FIFO with a dead-letter queue", q["FifoQueue"] is True and "RedrivePolicy" in q)
    # Dispatch's retry times: 5 s doubling to an hour; the receives must span a day.
    waits = [min(5 * 2 ** (n - 1), 3600) for n in range(1, int(q["RedrivePolicy"]["maxReceiveCount"]))]
    check("a failed notification is retried for more than 24 hours before the dead-letter queue",
          sum(waits) >= 86400, f"maxReceiveCount {q['RedrivePolicy']['maxReceiveCount']} spans {sum(waits)} s")
    check("dispatch knows the notification queue (catch-up steps, retry times)",
          ref_name(dispatch_fn["Environment"]["Variables"].get("RELAY365_QUEUE_URL")) == "NotificationQueue")
    sqs_grants = [(sorted(as_list(st["Action"])), ref_name(r) if not isinstance(r, dict) or "Fn::GetAtt" not in r else r["Fn::GetAtt"][0] if isinstance(r["Fn::GetAtt"], list) else r["Fn::GetAtt"].split(".")[0])
                  for st in statements(functions["mail-dispatch"][1]) for r in as_list(st["Resource"])
                  if any(a.startswith("sqs:") for a in as_list(st["Action"]))]
    check("dispatch may only queue on and set retry times of the notification queue",
          sqs_grants == [(["sqs:ChangeMessageVisibility", "sqs:SendMessage"], "NotificationQueue")], str(sqs_grants))
    dq = resources["DeferredSendQueue"]["Properties"]
    send_fn = functions["send-mail"][1]["Properties"]
    check("deferred sends have a dead-letter queue", "RedrivePolicy" in dq)
    check("deferred sends are consumed by send-mail with partial failures",
          any(e["Type"] == "SQS" and ref_name(e["Properties"]["Queue"]) == "DeferredSendQueue"
              and e["Properties"].get("FunctionResponseTypes") == ["ReportBatchItemFailures"]
              for e in send_fn.get("Events", {}).values()))
    check("the deferred-send queue hides a record longer than send-mail may run",
          int(dq["VisibilityTimeout"]) >= int(send_fn["Timeout"]), f'{dq["VisibilityTimeout"]} < {send_fn["Timeout"]}')
    alarmed = [r for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"
               and any(ref_name(d.get("Value")) == "DeferredSendDeadLetterQueue" for d in r["Properties"].get("Dimensions", []))]
    check("the deferred-send dead-letter queue is alarmed", len(alarmed) == 1)
    # What relay365 measures: alarms with their default thresholds, and a dashboard showing every metric.
    params = t["Parameters"]
    check("parameter OldestNotificationAlarmSeconds defaults to 300", params.get("OldestNotificationAlarmSeconds", {}).get("Default") == 300)
    check("parameter WebhookLatencyAlarmMilliseconds defaults to 2000", params.get("WebhookLatencyAlarmMilliseconds", {}).get("Default") == 2000)
    alarms = {lid: r["Properties"] for lid, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    def alarm(lid, namespace, metric, threshold, stat=None):
        a = alarms.get(lid, {})
        got_threshold = a.get("Threshold")
        got_threshold = params[ref_name(got_threshold)]["Default"] if isinstance(got_threshold, dict) else got_threshold
        ok = (a.get("Namespace"), a.get("MetricName")) == (namespace, metric) and got_threshold == threshold
        if stat:
            ok = ok and (a.get("ExtendedStatistic") or a.get("Statistic")) == stat
        check(f"alarm {lid}: {namespace} {metric} over {threshold}", ok, str(a))
        check(f"alarm {lid} notifies the alarm topic", a.get("AlarmActions") == {"Fn::If": ["WithAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}, str(a.get("AlarmActions")))
    alarm("DeadLetterAlarm", "AWS/SQS", "ApproximateNumberOfMessagesVisible", 0)
    alarm("DeferredSendDeadLetterAlarm", "AWS/SQS", "ApproximateNumberOfMessagesVisible", 0)
    alarm("OldestNotificationAlarm", "AWS/SQS", "ApproximateAgeOfOldestMessage", 300)
    alarm("WebhookLatencyAlarm", "relay365", "WebhookAckLatency", 2000, "p99")
    alarm("RenewalFailuresAlarm", "relay365", "SubscriptionRenewalFailures", 0)
    alarm("ReauthRequiredAlarm", "relay365", "ReauthRequired", 0)
    check("the oldest-notification alarm watches the notification queue",
          any(d.get("Value") == {"Fn::GetAtt": ["NotificationQueue", "QueueName"]} or d.get("Value") == {"Fn::GetAtt": "NotificationQueue.QueueName"}
              for d in alarms.get("OldestNotificationAlarm", {}).get("Dimensions", [])))
    names = re.findall(r'pub const \w+: &str = "(\w+)";', (ROOT / "shared/src/metrics.rs").read_text())
    names = [n for n in names if n != "relay365"]
    dash = resources.get("Dashboard", {}).get("Properties", {}).get("DashboardBody", {})
    body = dash["Fn::Sub"][0] if isinstance(dash, dict) and "Fn::Sub" in dash else ""
    filled = re.sub(r"\$\{[^}]+\}", "1", body)
    try:
        widgets = json.loads(filled)["widgets"]
    except (ValueError, KeyError) as e:
        widgets = []
        check("the dashboard body is JSON", False, str(e))
    shown = {m[1] for w in widgets for m in w["properties"].get("metrics", []) if len(m) > 1 and isinstance(m[1], str)}
    check("the metrics module names metrics", len(names) >= 12, str(names))
    check("the dashboard shows every relay365 metric", set(names) <= shown, str(set(names) - shown))
    check("the dashboard shows the queue's oldest message", "ApproximateAgeOfOldestMessage" in shown)
    outputs = t["Outputs"]
    for o in ("ApiUrl", "RedirectUri", "AdminConsentRedirectUri", "NotificationUrl"):
        check(f"output {o}", o in outputs)

    check_token_key(t, functions)

    failed = [r for r in results if not r[1]]
    for name, _, detail in failed:
        print(f"FAIL {name}: {detail}")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
