# Alarms on every function's errors and throttles, the API functions' p99 duration, and each dead-letter
# queue: letters received (dead-letters drains them, so depth alone no longer tells that any arrived),
# letters waiting (dead-letters not taking them) and letters kept in flight (dead-letters failing them);
# and one CloudWatch dashboard for the platform.

locals {
  alarm_actions = var.alarm_topic_arn == "" ? [] : [var.alarm_topic_arn]
  # Errors (5 in 5 minutes) and throttles (any) of every function.
  function_alarms = merge([
    for name in keys(local.functions) : {
      "${name}-errors"    = { function = name, metric = "Errors", threshold = 5, description = "${name} failed invocations" }
      "${name}-throttles" = { function = name, metric = "Throttles", threshold = 1, description = "${name} invocations throttled" }
    }
  ]...)
  dead_letter_queues = { for k, q in local.dead_letter_sources : k => q.name }
}

resource "aws_cloudwatch_metric_alarm" "function" {
  for_each            = local.function_alarms
  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = "AWS/Lambda"
  metric_name         = each.value.metric
  dimensions          = { FunctionName = aws_lambda_function.this[each.value.function].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = each.value.threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "p99_duration" {
  for_each            = local.http_functions
  alarm_name          = "${var.name}-${each.key}-p99-duration"
  alarm_description   = "${each.key} p99 duration above ${var.p99_duration_alarm_ms} ms"
  namespace           = "AWS/Lambda"
  metric_name         = "Duration"
  dimensions          = { FunctionName = aws_lambda_function.this[each.key].function_name }
  extended_statistic  = "p99"
  period              = 300
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  threshold           = var.p99_duration_alarm_ms
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# Every letter dead-letters receives. SQS counts no message a redrive moves in (NumberOfMessagesSent
# leaves them out), so receipts are what shows that one arrived; a letter retried counts again.
resource "aws_cloudwatch_metric_alarm" "dead_letters_received" {
  for_each            = local.dead_letter_queues
  alarm_name          = "${var.name}-${each.key}-dead-letters-received"
  alarm_description   = "dead letters received from ${each.value}: dead-letters fails their videos if still processing"
  namespace           = "AWS/SQS"
  metric_name         = "NumberOfMessagesReceived"
  dimensions          = { QueueName = each.value }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# Letters nobody takes: dead-letters down, throttled, or its event source mapping disabled.
resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  for_each            = local.dead_letter_queues
  alarm_name          = "${var.name}-${each.key}-dead-letters"
  alarm_description   = "messages waiting in ${each.value}: dead-letters is not taking them"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# Letters dead-letters keeps failing: reported as batch item failures, they count in no Lambda error but
# stay in flight (received again after each visibility timeout), as a letter taken in time never does.
resource "aws_cloudwatch_metric_alarm" "dead_letters_in_flight" {
  for_each            = local.dead_letter_queues
  alarm_name          = "${var.name}-${each.key}-dead-letters-in-flight"
  alarm_description   = "messages in flight in ${each.value} for 15 minutes: dead-letters keeps failing them"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesNotVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Minimum"
  period              = 300
  evaluation_periods  = 3
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.name
  dashboard_body = jsonencode({
    widgets = [
      {
        type = "metric", x = 0, y = 0, width = 12, height = 6
        properties = {
          title = "Invocations", region = local.region, stat = "Sum", period = 60, view = "timeSeries"
          metrics = [for name in keys(local.functions) : ["AWS/Lambda", "Invocations", "FunctionName", "${var.name}-${name}"]]
        }
      },
      {
        type = "metric", x = 12, y = 0, width = 12, height = 6
        properties = {
          title = "Errors", region = local.region, stat = "Sum", period = 60, view = "timeSeries"
          metrics = [for name in keys(local.functions) : ["AWS/Lambda", "Errors", "FunctionName", "${var.name}-${name}"]]
        }
      },
      {
        type = "metric", x = 0, y = 6, width = 12, height = 6
        properties = {
          title = "API p99 duration (ms)", region = local.region, stat = "p99", period = 60, view = "timeSeries"
          metrics = [for name in keys(local.http_functions) : ["AWS/Lambda", "Duration", "FunctionName", "${var.name}-${name}"]]
        }
      },
      {
        type = "metric", x = 12, y = 6, width = 12, height = 6
        properties = {
          title = "Throttles and concurrency", region = local.region, stat = "Maximum", period = 60, view = "timeSeries"
          metrics = concat(
            [for name in keys(local.functions) : ["AWS/Lambda", "Throttles", "FunctionName", "${var.name}-${name}", { stat = "Sum" }]],
            [["AWS/Lambda", "ProvisionedConcurrencyUtilization", "FunctionName", "${var.name}-api-playback", "Resource", "${var.name}-api-playback:live"]],
          )
        }
      },
      {
        type = "metric", x = 0, y = 12, width = 12, height = 6
        properties = {
          title = "Queues (messages waiting)", region = local.region, stat = "Maximum", period = 60, view = "timeSeries"
          metrics = concat(
            [["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.jobs.name]],
            [["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.finalize.name]],
            [for q in values(local.dead_letter_queues) : ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q]],
          )
        }
      },
      {
        type = "metric", x = 12, y = 12, width = 12, height = 6
        properties = {
          title = "Videos and uploads (StreamGate metrics)", region = local.region, stat = "Sum", period = 300, view = "timeSeries"
          metrics = [
            ["StreamGate", "streamgate_uploads_completed_total", "function", "api-upload"],
            ["StreamGate", "streamgate_videos_ready_total", "function", "finalize"],
            ["StreamGate", "streamgate_videos_deleted_total", "function", "api-videos"],
            ["StreamGate", "streamgate_playback_grants_total", "function", "api-playback"],
            ["StreamGate", "streamgate_playback_denials_total", "function", "api-playback"],
          ]
        }
      },
      {
        type = "metric", x = 0, y = 18, width = 12, height = 6
        properties = {
          title = "Dead letters received by dead-letters", region = local.region, stat = "Sum", period = 300, view = "timeSeries"
          metrics = [for q in values(local.dead_letter_queues) : ["AWS/SQS", "NumberOfMessagesReceived", "QueueName", q]]
        }
      },
    ]
  })
}
