# One role per function, granting the actions its code calls on its own resources and nothing else.

locals {
  table_arns   = [aws_dynamodb_table.this.arn, "${aws_dynamodb_table.this.arn}/index/*"]
  table_access = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"]
  queue_consume = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]

  sources_objects = "${aws_s3_bucket.sources.arn}/sources/*"
  upload_tails    = "${aws_s3_bucket.sources.arn}/uploads/*"
  media_objects   = "${aws_s3_bucket.media.arn}/videos/*"

  # function => list of { actions, resources }
  grants = {
    "api-auth" = []
    "api-upload" = [
      { actions = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"], resources = [local.sources_objects, local.upload_tails] },
      { actions = ["s3:ListBucket"], resources = [aws_s3_bucket.sources.arn] },
    ]
    "api-videos" = [
      { actions = ["s3:DeleteObject", "s3:AbortMultipartUpload"], resources = [local.sources_objects, local.upload_tails] },
      { actions = ["s3:DeleteObject"], resources = [local.media_objects] },
      { actions = ["s3:ListBucket"], resources = [aws_s3_bucket.sources.arn, aws_s3_bucket.media.arn] },
      { actions = ["sqs:SendMessage"], resources = [aws_sqs_queue.finalize.arn] },
    ]
    "api-playback" = [
      { actions = ["s3:GetObject"], resources = [local.media_objects] },
      { actions = ["s3:ListBucket"], resources = [aws_s3_bucket.media.arn] },
    ]
    "api-chains" = []
    "on-upload" = [
      { actions = ["s3:GetObject"], resources = [local.sources_objects] },
      { actions = ["s3:ListBucket"], resources = [aws_s3_bucket.sources.arn] },
      { actions = ["sqs:SendMessage"], resources = [aws_sqs_queue.jobs.arn] },
    ]
    "transcode" = [
      { actions = ["s3:GetObject"], resources = [local.sources_objects] },
      { actions = ["s3:GetObject", "s3:PutObject"], resources = [local.media_objects] },
      { actions = ["s3:ListBucket"], resources = [aws_s3_bucket.media.arn] },
      { actions = local.queue_consume, resources = [aws_sqs_queue.jobs.arn] },
      { actions = ["sqs:SendMessage"], resources = [aws_sqs_queue.finalize.arn] },
    ]
    "finalize" = [
      { actions = ["s3:GetObject", "s3:PutObject"], resources = [local.media_objects] },
      { actions = ["s3:ListBucket"], resources = [aws_s3_bucket.media.arn] },
      { actions = local.queue_consume, resources = [aws_sqs_queue.finalize.arn] },
    ]
    "dead-letters" = [
      { actions = local.queue_consume, resources = [for q in values(local.dead_letter_sources) : q.arn] },
    ]
    "chain-indexer" = []
    "gas-monitor"   = []
    "tx-tracker"    = []
  }
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each           = local.functions
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "function" {
  for_each = local.functions

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function[each.key].arn}:*"]
  }

  statement {
    sid = "Traces"
    # X-Ray has no resource-level permissions for these two actions.
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }

  statement {
    sid       = "Records"
    actions   = local.table_access
    resources = local.table_arns
  }

  statement {
    sid       = "PlatformKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
  }

  statement {
    sid       = "FailedEvents"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.failed_events.arn]
  }

  dynamic "statement" {
    for_each = local.grants[each.key]
    content {
      actions   = statement.value.actions
      resources = statement.value.resources
    }
  }
}

resource "aws_iam_role_policy" "function" {
  for_each = local.functions
  name     = "${var.name}-${each.key}"
  role     = aws_iam_role.function[each.key].id
  policy   = data.aws_iam_policy_document.function[each.key].json
}
