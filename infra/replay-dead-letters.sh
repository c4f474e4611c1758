#!/usr/bin/env bash
# Moves what waits in a dead-letter queue back to its queue, once the cause
# is fixed (the flow's target is up again, the app secret is renewed...).
#
#   infra/replay-dead-letters.sh --stack relay365              # notifications
#   infra/replay-dead-letters.sh --stack relay365 --deferred   # deferred sends
#   infra/replay-dead-letters.sh --stack relay365 --count      # only say how many wait
#
# It uses SQS's own redrive (StartMessageMoveTask; FIFO to FIFO for the
# notification queue) and waits until the task is done. Nothing is delivered
# twice: dispatch checks the delivery ledger before fetching a mail and writes
# it the moment a target took an event, so a record that was delivered but
# still failed (its target answered after our timeout) is skipped; a deferred
# send is recorded under its idempotency key the same way.
# GET /connections/{id} shows each subscription's last_error: check it first.
set -euo pipefail
STACK=""
DLQ=NotificationDeadLetterQueue
QUEUE=NotificationQueue
COUNT_ONLY=0
usage() { echo "usage: $0 --stack NAME [--deferred] [--count]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) STACK=${2:-}; shift 2 ;;
    --deferred) DLQ=DeferredSendDeadLetterQueue; QUEUE=DeferredSendQueue; shift ;;
    --count) COUNT_ONLY=1; shift ;;
    *) usage ;;
  esac
done
[ -n "$STACK" ] || usage
url_of() {
  aws cloudformation describe-stack-resource --stack-name "$STACK" --logical-resource-id "$1" \
    --query StackResourceDetail.PhysicalResourceId --output text
}
arn_of() {
  aws sqs get-queue-attributes --queue-url "$1" --attribute-names QueueArn --query Attributes.QueueArn --output text
}
DLQ_URL=$(url_of "$DLQ")
QUEUE_URL=$(url_of "$QUEUE")
waiting=$(aws sqs get-queue-attributes --queue-url "$DLQ_URL" --attribute-names ApproximateNumberOfMessages \
  --query Attributes.ApproximateNumberOfMessages --output text)
echo "$waiting message(s) wait in $DLQ."
[ "$COUNT_ONLY" = 1 ] && exit 0
[ "$waiting" = 0 ] && exit 0
task=$(aws sqs start-message-move-task --source-arn "$(arn_of "$DLQ_URL")" --destination-arn "$(arn_of "$QUEUE_URL")" \
  --query TaskHandle --output text)
echo "moving them back to $QUEUE (task $task)..."
while :; do
  read -r status moved < <(aws sqs list-message-move-tasks --source-arn "$(arn_of "$DLQ_URL")" --max-results 1 \
    --query 'Results[0].[Status,ApproximateNumberOfMessagesMoved]' --output text)
  case "$status" in
    COMPLETED) echo "done: $moved message(s) moved back; they are delivered as the queue hands them over."; exit 0 ;;
    FAILED|CANCELLED) echo "the move task ended $status after $moved message(s); run again to retry." >&2; exit 1 ;;
    *) sleep 5 ;;
  esac
done
