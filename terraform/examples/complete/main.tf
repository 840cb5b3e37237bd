# StreamGate on AWS: the whole platform in one region.
#
#   cargo lambda build --release --arm64 --output-format zip   # target/lambda/<function>/bootstrap.zip
#   terraform init && terraform apply -var-file=prod.tfvars
#
# Secrets (session key, URL signing key, RPC URLs with their API keys) come in as sensitive variables,
# e.g. TF_VAR_session_key from the deployer's secret store; keep them out of tfvars files in git.

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.0, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      application = "streamgate"
      environment = var.environment
    }
  }
}

module "streamgate" {
  source = "../../modules/streamgate"

  name             = "streamgate-${var.environment}"
  artifacts_dir    = var.artifacts_dir
  architecture     = "arm64"
  ffmpeg_layer_arn = var.ffmpeg_layer_arn
  domain           = var.domain

  session_key     = var.session_key
  url_signing_key = var.url_signing_key
  rpc_urls        = var.rpc_urls

  settings = {
    STREAMGATE_LADDER       = "1080p,720p,480p,360p,240p"
    STREAMGATE_PLAYBACK_TTL = "300"
  }
  cors_allowed_origins = ["https://${var.domain}"]

  transcode_max_concurrency        = 50
  playback_provisioned_concurrency = { min = 2, max = 50, target = 0.7 }
  alarm_topic_arn                  = aws_sns_topic.alarms.arn
  canary                           = var.canary
  canary_versions                  = var.canary_versions
  live_versions                    = var.live_versions
}

resource "aws_sns_topic" "alarms" {
  name              = "streamgate-${var.environment}-alarms"
  kms_master_key_id = "alias/aws/sns"
}
