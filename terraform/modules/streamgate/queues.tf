# The jobs queue (one message per transcoding chunk) and the finalize queue, each redriving to its own
# dead-letter queue after max_receives deliveries; a third queue keeps failed asynchronous invocations
# (the storage notification on-upload could not handle, schedules). dead-letters takes all three, failing
# the video a letter names if it is still processing (alarms.tf tells operators of each letter).

locals {
  max_receives = 5
  queues = {
    jobs     = { consumer = "transcode", batch_size = 1 }
    finalize = { consumer = "finalize", batch_size = 1 }
  }
  # What dead-letters consumes, by the name its alarms use.
  dead_letter_sources = merge(
    { for k, q in aws_sqs_queue.dead : k => q },
    { "failed-events" = aws_sqs_queue.failed_events },
  )
}

resource "aws_sqs_queue" "dead" {
  for_each                  = local.queues
  name                      = "${var.name}-${each.key}-dlq"
  message_retention_seconds = 1209600
  # dead-letters consumes it: six times its timeout, as Lambda's SQS event source asks.
  visibility_timeout_seconds = 6 * local.timeout["dead-letters"]
  kms_master_key_id          = aws_kms_key.this.arn
  tags                       = var.tags
}

resource "aws_sqs_queue" "jobs" {
  name = "${var.name}-jobs"
  # Six times the consumer's timeout, as Lambda's SQS event source asks.
  visibility_timeout_seconds = 6 * local.timeout["transcode"]
  message_retention_seconds  = 345600
  kms_master_key_id          = aws_kms_key.this.arn
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead["jobs"].arn
    maxReceiveCount     = local.max_receives
  })
  tags = var.tags
}

resource "aws_sqs_queue" "finalize" {
  name                       = "${var.name}-finalize"
  visibility_timeout_seconds = 6 * local.timeout["finalize"]
  message_retention_seconds  = 345600
  kms_master_key_id          = aws_kms_key.this.arn
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead["finalize"].arn
    maxReceiveCount     = local.max_receives
  })
  tags = var.tags
}

resource "aws_sqs_queue" "failed_events" {
  name                       = "${var.name}-failed-events"
  message_retention_seconds  = 1209600
  visibility_timeout_seconds = 6 * local.timeout["dead-letters"]
  kms_master_key_id          = aws_kms_key.this.arn
  tags                       = var.tags
}

resource "aws_sqs_queue_redrive_allow_policy" "dead" {
  for_each  = local.queues
  queue_url = aws_sqs_queue.dead[each.key].id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [each.key == "jobs" ? aws_sqs_queue.jobs.arn : aws_sqs_queue.finalize.arn]
  })
}

resource "aws_lambda_event_source_mapping" "queue" {
  for_each = local.queues

  event_source_arn        = each.key == "jobs" ? aws_sqs_queue.jobs.arn : aws_sqs_queue.finalize.arn
  function_name           = aws_lambda_alias.live[each.value.consumer].arn
  batch_size              = each.value.batch_size
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = each.key == "jobs" ? var.transcode_max_concurrency : 10
  }
}

# dead-letters drains the dead-letter queues and the failed invocations. A letter it fails on comes back
# after the visibility timeout until the queue's retention ends; the dead-letter queues redrive nowhere.
resource "aws_lambda_event_source_mapping" "dead_letters" {
  for_each = local.dead_letter_sources

  event_source_arn        = each.value.arn
  function_name           = aws_lambda_alias.live["dead-letters"].arn
  batch_size              = 10
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = 2
  }
}
