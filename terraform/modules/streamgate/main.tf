# One Lambda function per StreamGate function binary, named <name>-<function>, each with its own role,
# log group, published versions and a `live` alias that everything invokes (function URLs, queues, the
# storage notification, schedules), so that a release moves traffic by moving the alias.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account = data.aws_caller_identity.current.account_id
  region  = data.aws_region.current.region

  # kind: what triggers it; rpc: reads chains; session: checks or issues session tokens.
  functions = {
    "api-auth"      = { kind = "http", memory = 256, timeout = 10, ffmpeg = false, rpc = true, session = true }
    "api-upload"    = { kind = "http", memory = 512, timeout = 60, ffmpeg = false, rpc = true, session = true }
    "api-videos"    = { kind = "http", memory = 256, timeout = 60, ffmpeg = false, rpc = true, session = true }
    "api-playback"  = { kind = "http", memory = 512, timeout = 10, ffmpeg = false, rpc = true, session = true }
    "api-chains"    = { kind = "http", memory = 256, timeout = 10, ffmpeg = false, rpc = true, session = true }
    "on-upload"     = { kind = "storage", memory = 1024, timeout = 900, ffmpeg = true, rpc = false, session = false }
    "transcode"     = { kind = "queue", memory = 3008, timeout = 900, ffmpeg = true, rpc = false, session = false }
    "finalize"      = { kind = "queue", memory = 2048, timeout = 900, ffmpeg = true, rpc = false, session = false }
    "dead-letters"  = { kind = "queue", memory = 256, timeout = 30, ffmpeg = false, rpc = false, session = false }
    "chain-indexer" = { kind = "schedule", memory = 256, timeout = 60, ffmpeg = false, rpc = true, session = false }
    "gas-monitor"   = { kind = "schedule", memory = 256, timeout = 60, ffmpeg = false, rpc = true, session = false }
    "tx-tracker"    = { kind = "schedule", memory = 256, timeout = 60, ffmpeg = false, rpc = true, session = false }
  }

  http_functions     = { for k, v in local.functions : k => v if v.kind == "http" }
  schedule_functions = { for k, v in local.functions : k => v if v.kind == "schedule" }

  base_env = merge(var.settings, {
    STREAMGATE_BACKEND            = "aws"
    STREAMGATE_LOG_FORMAT         = "json"
    STREAMGATE_TABLE              = aws_dynamodb_table.this.name
    STREAMGATE_SOURCES_BUCKET     = aws_s3_bucket.sources.bucket
    STREAMGATE_MEDIA_BUCKET       = aws_s3_bucket.media.bucket
    STREAMGATE_JOBS_QUEUE_URL     = aws_sqs_queue.jobs.url
    STREAMGATE_FINALIZE_QUEUE_URL = aws_sqs_queue.finalize.url
    STREAMGATE_DOMAIN             = var.domain
    STREAMGATE_MAX_ATTEMPTS       = tostring(local.max_receives)
    # The bucket's lifecycle rule aborts multipart uploads this old: an upload may take no longer.
    STREAMGATE_UPLOAD_MAX_AGE = tostring(var.incomplete_upload_days * 86400)
  })
  rpc_env = { for id, urls in var.rpc_urls : "STREAMGATE_RPC_${id}" => urls }
  session_env = merge(
    { STREAMGATE_SESSION_KEY = var.session_key },
    var.session_previous_key == "" ? {} : { STREAMGATE_SESSION_PREVIOUS_KEY = var.session_previous_key },
  )

  env = {
    for name, f in local.functions : name => merge(
      local.base_env,
      f.rpc ? local.rpc_env : {},
      f.session ? local.session_env : {},
      name == "api-playback" ? { STREAMGATE_URL_SIGNING_KEY = var.url_signing_key } : {},
    )
  }

  memory  = { for name, f in local.functions : name => coalesce(try(var.functions[name].memory_size, null), f.memory) }
  timeout = { for name, f in local.functions : name => coalesce(try(var.functions[name].timeout, null), f.timeout) }
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: data at rest (table, buckets, queues, logs, function settings)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:a key policy's Resource "*" is the key itself; the account statement is AWS's default, which lets IAM policies grant use
  #checkov:skip=CKV_AWS_111:as above: this is the key's own policy, not an identity policy
  #checkov:skip=CKV_AWS_356:as above: in a key policy "*" names only this key
  statement {
    sid       = "Account"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${local.account}:root"]
    }
  }
  statement {
    sid       = "Logs"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${local.region}:${local.account}:log-group:/aws/lambda/${var.name}-*"]
    }
  }
  dynamic "statement" {
    for_each = var.cloudfront == null ? [] : [1]
    content {
      sid       = "CloudFrontReadsMedia"
      actions   = ["kms:Decrypt"]
      resources = ["*"]
      principals {
        type        = "Service"
        identifiers = ["cloudfront.amazonaws.com"]
      }
      condition {
        test     = "StringEquals"
        variable = "AWS:SourceArn"
        values   = ["arn:${data.aws_partition.current.partition}:cloudfront::${local.account}:distribution/*"]
      }
    }
  }
}

resource "aws_cloudwatch_log_group" "function" {
  for_each          = local.functions
  name              = "/aws/lambda/${var.name}-${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
  tags              = var.tags
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_117:the functions call public chain RPC endpoints and AWS APIs only; a VPC would add NAT and cold-start cost and protect nothing they reach
  #checkov:skip=CKV_AWS_272:the zips come from the deployer's own build pipeline; a signing profile is theirs to add (code_signing_config_arn)
  for_each = local.functions

  function_name    = "${var.name}-${each.key}"
  description      = "StreamGate ${each.key}"
  role             = aws_iam_role.function[each.key].arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]
  filename         = "${var.artifacts_dir}/${each.key}/bootstrap.zip"
  source_code_hash = filebase64sha256("${var.artifacts_dir}/${each.key}/bootstrap.zip")
  memory_size      = local.memory[each.key]
  timeout          = local.timeout[each.key]
  publish          = true
  layers           = each.value.ffmpeg ? [var.ffmpeg_layer_arn] : []
  kms_key_arn      = aws_kms_key.this.arn

  reserved_concurrent_executions = coalesce(try(var.functions[each.key].reserved_concurrency, null), -1)

  environment {
    variables = local.env[each.key]
  }

  tracing_config {
    mode = "Active"
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function[each.key].name
  }

  # Failed asynchronous invocations (the storage notification, schedules) are kept, not dropped.
  dead_letter_config {
    target_arn = aws_sqs_queue.failed_events.arn
  }

  tags = merge(var.tags, { "streamgate:function" = each.key })

  depends_on = [aws_iam_role_policy.function]
}

resource "aws_lambda_alias" "live" {
  for_each = local.functions

  name             = "live"
  function_name    = aws_lambda_function.this[each.key].function_name
  function_version = lookup(var.live_versions, each.key, aws_lambda_function.this[each.key].version)

  dynamic "routing_config" {
    for_each = contains(keys(var.canary), each.key) ? [1] : []
    content {
      additional_version_weights = { (var.canary_versions[each.key]) = var.canary[each.key] }
    }
  }

  lifecycle {
    precondition {
      condition     = !contains(keys(var.canary), each.key) || contains(keys(var.canary_versions), each.key)
      error_message = "a function in canary needs its canary_versions entry."
    }
  }
}

resource "aws_lambda_function_url" "api" {
  #checkov:skip=CKV_AWS_258:the public API: every call is authorised by StreamGate itself (Bearer sessions, signed URLs), as browsers cannot sign IAM requests
  for_each = local.http_functions

  function_name      = aws_lambda_function.this[each.key].function_name
  qualifier          = aws_lambda_alias.live[each.key].name
  authorization_type = "NONE" # public API: every call is authorised by StreamGate itself (Bearer sessions, signed URLs)
  invoke_mode        = "BUFFERED"

  cors {
    allow_origins     = var.cors_allowed_origins
    allow_methods     = ["GET", "POST", "PATCH", "DELETE", "HEAD"]
    allow_headers     = ["authorization", "content-type", "tus-resumable", "upload-length", "upload-offset", "upload-metadata", "upload-checksum", "upload-concat", "upload-defer-length", "x-http-method-override", "x-request-id"]
    expose_headers    = ["location", "tus-resumable", "tus-version", "tus-extension", "tus-max-size", "tus-checksum-algorithm", "upload-offset", "upload-length", "upload-expires", "upload-metadata", "x-request-id", "retry-after"]
    max_age           = 86400
    allow_credentials = false
  }
}

# api-playback answers fast from its first request: its live alias keeps warm instances, scaled on use.
resource "aws_lambda_provisioned_concurrency_config" "playback" {
  count                             = var.playback_provisioned_concurrency.min > 0 ? 1 : 0
  function_name                     = aws_lambda_function.this["api-playback"].function_name
  qualifier                         = aws_lambda_alias.live["api-playback"].name
  provisioned_concurrent_executions = var.playback_provisioned_concurrency.min

  lifecycle {
    # Application Auto Scaling moves it between min and max.
    ignore_changes = [provisioned_concurrent_executions]
  }
}

resource "aws_appautoscaling_target" "playback" {
  count              = var.playback_provisioned_concurrency.max > 0 ? 1 : 0
  service_namespace  = "lambda"
  scalable_dimension = "lambda:function:ProvisionedConcurrency"
  resource_id        = "function:${aws_lambda_function.this["api-playback"].function_name}:${aws_lambda_alias.live["api-playback"].name}"
  min_capacity       = var.playback_provisioned_concurrency.min
  max_capacity       = var.playback_provisioned_concurrency.max
  depends_on         = [aws_lambda_provisioned_concurrency_config.playback]
}

resource "aws_appautoscaling_policy" "playback" {
  count              = var.playback_provisioned_concurrency.max > 0 ? 1 : 0
  name               = "${var.name}-api-playback-utilisation"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.playback[0].service_namespace
  scalable_dimension = aws_appautoscaling_target.playback[0].scalable_dimension
  resource_id        = aws_appautoscaling_target.playback[0].resource_id

  target_tracking_scaling_policy_configuration {
    target_value = var.playback_provisioned_concurrency.target
    predefined_metric_specification {
      predefined_metric_type = "LambdaProvisionedConcurrencyUtilization"
    }
  }
}
