# Two buckets: sources (uploads land at sources/{videoId}; unfinished tus uploads keep tail objects under
# uploads/) and media (streams under videos/{videoId}/). Private, encrypted with the platform key, TLS only.

resource "aws_s3_bucket" "sources" {
  #checkov:skip=CKV_AWS_18:object-level audit comes from CloudTrail data events; server access logs need a log bucket the deployer owns
  #checkov:skip=CKV_AWS_144:cross-region replication is a disaster-recovery choice left to the deployer (versioning and PITR cover mistakes)
  bucket_prefix = "${var.name}-sources-"
  tags          = var.tags
}

resource "aws_s3_bucket" "media" {
  #checkov:skip=CKV2_AWS_62:nothing reacts to writes of media objects; the pipeline's queues carry its work
  #checkov:skip=CKV_AWS_18:object-level audit comes from CloudTrail data events; server access logs need a log bucket the deployer owns
  #checkov:skip=CKV_AWS_144:cross-region replication is a disaster-recovery choice left to the deployer (versioning and PITR cover mistakes)
  bucket_prefix = "${var.name}-media-"
  tags          = var.tags
}

locals {
  buckets = {
    sources = aws_s3_bucket.sources
    media   = aws_s3_bucket.media
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = local.buckets
  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets
  bucket   = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = local.buckets
  bucket   = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.buckets
  bucket   = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

data "aws_iam_policy_document" "tls_only" {
  for_each = local.buckets
  statement {
    sid     = "TlsOnly"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      each.value.arn,
      "${each.value.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
  dynamic "statement" {
    for_each = each.key == "media" && var.cloudfront != null ? [1] : []
    content {
      sid       = "CloudFrontReads"
      actions   = ["s3:GetObject"]
      resources = ["${each.value.arn}/videos/*"]
      principals {
        type        = "Service"
        identifiers = ["cloudfront.amazonaws.com"]
      }
      condition {
        test     = "StringEquals"
        variable = "AWS:SourceArn"
        values   = [aws_cloudfront_distribution.media[0].arn]
      }
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  for_each   = local.buckets
  bucket     = each.value.id
  policy     = data.aws_iam_policy_document.tls_only[each.key].json
  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "sources" {
  bucket = aws_s3_bucket.sources.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.incomplete_upload_days
    }
  }

  rule {
    id     = "expire-upload-tails"
    status = "Enabled"
    filter {
      prefix = "uploads/"
    }
    expiration {
      days = var.incomplete_upload_days
    }
  }

  rule {
    id     = "expire-replaced-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
    expiration {
      expired_object_delete_marker = true
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "media" {
  bucket = aws_s3_bucket.media.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "expire-replaced-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
    expiration {
      expired_object_delete_marker = true
    }
  }
}

# Browsers upload parts straight to the sources bucket (presigned URLs) and need each part's ETag back.
resource "aws_s3_bucket_cors_configuration" "sources" {
  bucket = aws_s3_bucket.sources.id
  cors_rule {
    allowed_methods = ["PUT"]
    allowed_origins = var.cors_allowed_origins
    allowed_headers = ["*"]
    expose_headers  = ["ETag"]
    max_age_seconds = 3600
  }
}

# A finished upload starts on-upload.
resource "aws_lambda_permission" "sources_notify" {
  statement_id   = "SourcesBucketNotifies"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.this["on-upload"].function_name
  qualifier      = aws_lambda_alias.live["on-upload"].name
  principal      = "s3.amazonaws.com"
  source_arn     = aws_s3_bucket.sources.arn
  source_account = local.account
}

resource "aws_s3_bucket_notification" "sources" {
  bucket = aws_s3_bucket.sources.id
  lambda_function {
    lambda_function_arn = aws_lambda_alias.live["on-upload"].arn
    events              = ["s3:ObjectCreated:*"]
    filter_prefix       = "sources/"
  }
  depends_on = [aws_lambda_permission.sources_notify]
}
