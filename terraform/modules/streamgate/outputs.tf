output "function_urls" {
  description = "Base URL of each API function (its live alias), by function name."
  value       = { for name, url in aws_lambda_function_url.api : name => trimsuffix(url.function_url, "/") }
}

output "function_names" {
  description = "Lambda function names, by StreamGate function name (for the release command)."
  value       = { for name, f in aws_lambda_function.this : name => f.function_name }
}

output "table_name" {
  description = "The DynamoDB table."
  value       = aws_dynamodb_table.this.name
}

output "sources_bucket" {
  description = "The bucket uploads land in."
  value       = aws_s3_bucket.sources.bucket
}

output "media_bucket" {
  description = "The bucket streams are served from."
  value       = aws_s3_bucket.media.bucket
}

output "queue_urls" {
  description = "The jobs and finalize queues and their dead-letter queues."
  value = {
    jobs          = aws_sqs_queue.jobs.url
    finalize      = aws_sqs_queue.finalize.url
    jobs_dlq      = aws_sqs_queue.dead["jobs"].url
    finalize_dlq  = aws_sqs_queue.dead["finalize"].url
    failed_events = aws_sqs_queue.failed_events.url
  }
}

output "media_cdn_domain" {
  description = "The CloudFront domain serving media, when enabled."
  value       = var.cloudfront == null ? null : aws_cloudfront_distribution.media[0].domain_name
}

output "kms_key_arn" {
  description = "The key encrypting the platform's data at rest."
  value       = aws_kms_key.this.arn
}
