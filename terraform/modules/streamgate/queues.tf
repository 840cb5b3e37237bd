# The jobs queue (one message per transcoding chunk) and the finalize queue, each redriving to its own
# dead-letter queue after max_receives deliveries; a third queue keeps failed asynchronous invocations.

locals {
  max_receives = 5
  queues = {
    jobs     = { consumer = "transcode", batch_size = 1 }
    finalize = { consumer = "finalize", batch_size = 1 }
  }
}

resource "aws_sqs_queue" "dead" {
  for_each                  = local.queues
  name                      = "${var.name}-${each.key}-dlq"
  message_retention_seconds = 1209600
  kms_master_key_id         = aws_kms_key.this.arn
  tags                      = var.tags
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
  name                      = "${var.name}-failed-events"
  message_retention_seconds = 1209600
  kms_master_key_id         = aws_kms_key.this.arn
  tags                      = var.tags
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
