# Optional: the media bucket behind CloudFront, reachable only through it (origin access control) and only
# with URLs signed by the key pair whose public key is given.

resource "aws_cloudfront_public_key" "media" {
  count       = var.cloudfront == null ? 0 : 1
  name        = "${var.name}-media"
  encoded_key = var.cloudfront.public_key_pem
}

resource "aws_cloudfront_key_group" "media" {
  count = var.cloudfront == null ? 0 : 1
  name  = "${var.name}-media"
  items = [aws_cloudfront_public_key.media[0].id]
}

resource "aws_cloudfront_origin_access_control" "media" {
  count                             = var.cloudfront == null ? 0 : 1
  name                              = "${var.name}-media"
  origin_access_control_origin_type = "s3"
  signing_behavior                  = "always"
  signing_protocol                  = "sigv4"
}

resource "aws_cloudfront_response_headers_policy" "media" {
  count = var.cloudfront == null ? 0 : 1
  name  = "${var.name}-media"

  cors_config {
    access_control_allow_credentials = false
    access_control_allow_headers {
      items = ["range", "authorization"]
    }
    access_control_allow_methods {
      items = ["GET", "HEAD"]
    }
    access_control_allow_origins {
      items = var.cors_allowed_origins
    }
    origin_override = true
  }

  security_headers_config {
    content_type_options {
      override = true
    }
    strict_transport_security {
      access_control_max_age_sec = 31536000
      include_subdomains         = true
      preload                    = true
      override                   = true
    }
  }
}

data "aws_cloudfront_cache_policy" "optimized" {
  name = "Managed-CachingOptimized"
}

resource "aws_cloudfront_distribution" "media" {
  #checkov:skip=CKV2_AWS_42:serves on its *.cloudfront.net name; a custom domain and ACM certificate are the deployer's to add
  #checkov:skip=CKV2_AWS_47:every request must carry a signed URL, so unsigned traffic never reaches the origin; a WAF web ACL is the deployer's choice
  #checkov:skip=CKV_AWS_68:as above
  #checkov:skip=CKV_AWS_174:the default certificate cannot take a minimum protocol version; with a custom certificate set TLSv1.2_2021
  #checkov:skip=CKV_AWS_86:standard logging needs a log bucket the deployer owns
  #checkov:skip=CKV_AWS_305:a media distribution has no root object: only signed object paths are served
  #checkov:skip=CKV_AWS_310:one origin in one region; failover needs a replica bucket (see CKV_AWS_144)
  #checkov:skip=CKV_AWS_374:viewers are worldwide; geo restriction is a licensing choice per deployment
  count           = var.cloudfront == null ? 0 : 1
  enabled         = true
  comment         = "${var.name} media"
  price_class     = var.cloudfront.price_class
  is_ipv6_enabled = true
  http_version    = "http2and3"

  origin {
    origin_id                = "media"
    domain_name              = aws_s3_bucket.media.bucket_regional_domain_name
    origin_access_control_id = aws_cloudfront_origin_access_control.media[0].id
  }

  default_cache_behavior {
    target_origin_id           = "media"
    viewer_protocol_policy     = "https-only"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    compress                   = true
    cache_policy_id            = data.aws_cloudfront_cache_policy.optimized.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.media[0].id
    trusted_key_groups         = [aws_cloudfront_key_group.media[0].id]
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = true
  }

  tags = var.tags
}
