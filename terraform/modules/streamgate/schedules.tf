# chain-indexer, gas-monitor and tx-tracker run on an EventBridge schedule.
resource "aws_cloudwatch_event_rule" "schedule" {
  for_each            = local.schedule_functions
  name                = "${var.name}-${each.key}"
  description         = "Runs ${each.key}"
  schedule_expression = var.schedule
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "schedule" {
  for_each = local.schedule_functions
  rule     = aws_cloudwatch_event_rule.schedule[each.key].name
  arn      = aws_lambda_alias.live[each.key].arn

  retry_policy {
    maximum_retry_attempts       = 2
    maximum_event_age_in_seconds = 300
  }
}

resource "aws_lambda_permission" "schedule" {
  for_each      = local.schedule_functions
  statement_id  = "EventBridgeSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this[each.key].function_name
  qualifier     = aws_lambda_alias.live[each.key].name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.schedule[each.key].arn
}
