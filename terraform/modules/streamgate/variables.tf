variable "name" {
  description = "Prefix of every resource's name, e.g. streamgate-prod."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name))
    error_message = "name must be 3 to 31 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "artifacts_dir" {
  description = "Directory holding one <function>/bootstrap.zip per function, as `cargo lambda build --release --arm64 --output-format zip` writes them under target/lambda/."
  type        = string
}

variable "architecture" {
  description = "Instruction set the function zips were built for."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "ffmpeg_layer_arn" {
  description = "ARN of a Lambda layer version with ffmpeg and ffprobe in bin/ (they land on /opt/bin, on the PATH), for on-upload, transcode and finalize."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:layer:[A-Za-z0-9_-]+:[0-9]+$", var.ffmpeg_layer_arn))
    error_message = "ffmpeg_layer_arn must be a Lambda layer version ARN (arn:aws:lambda:<region>:<account>:layer:<name>:<version>)."
  }
}

variable "session_key" {
  description = "PASERK k4.secret.… that signs session tokens (PASETO v4.public)."
  type        = string
  sensitive   = true

  validation {
    condition     = startswith(var.session_key, "k4.secret.")
    error_message = "session_key must be a PASERK k4.secret key."
  }
}

variable "session_previous_key" {
  description = "The session key before the current one, valid while keys rotate; empty when not rotating."
  type        = string
  sensitive   = true
  default     = ""

  validation {
    condition     = var.session_previous_key == "" || startswith(var.session_previous_key, "k4.secret.")
    error_message = "session_previous_key must be empty or a PASERK k4.secret key."
  }
}

variable "url_signing_key" {
  description = "64 hexadecimal digits that sign playback URLs."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^[0-9a-fA-F]{64}$", var.url_signing_key))
    error_message = "url_signing_key must be 64 hexadecimal digits."
  }
}

variable "domain" {
  description = "The domain Sign-In with Ethereum messages must name (STREAMGATE_DOMAIN), e.g. app.example.com."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?$", var.domain))
    error_message = "domain must be a host name, optionally with a port."
  }
}

variable "rpc_urls" {
  description = "JSON-RPC URLs by chain id (comma-separated fallbacks), e.g. { \"1\" = \"https://…,https://…\" }; they become STREAMGATE_RPC_<chainId>."
  type        = map(string)
  sensitive   = true
  default     = {}

  validation {
    condition     = alltrue([for id in keys(var.rpc_urls) : can(regex("^[1-9][0-9]{0,18}$", id))])
    error_message = "rpc_urls keys must be decimal chain ids."
  }
}

variable "settings" {
  description = "Further STREAMGATE_* settings for every function (see the README's configuration table), e.g. { STREAMGATE_LADDER = \"1080p,720p,360p\" }."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.settings) : startswith(k, "STREAMGATE_") && !contains(["STREAMGATE_SESSION_KEY", "STREAMGATE_SESSION_PREVIOUS_KEY", "STREAMGATE_URL_SIGNING_KEY"], k)])
    error_message = "settings keys must start with STREAMGATE_; keys have their own sensitive variables."
  }
}

variable "cors_allowed_origins" {
  description = "Origins browsers may call the API and upload parts from."
  type        = list(string)
  default     = ["*"]
}

variable "functions" {
  description = "Per-function overrides of memory (MB), timeout (s) and reserved concurrency (-1: none)."
  type = map(object({
    memory_size          = optional(number)
    timeout              = optional(number)
    reserved_concurrency = optional(number)
  }))
  default = {}

  validation {
    condition = alltrue([for name in keys(var.functions) : contains([
      "api-auth", "api-upload", "api-videos", "api-playback", "api-chains", "on-upload", "transcode",
      "finalize", "dead-letters", "chain-indexer", "gas-monitor", "tx-tracker",
    ], name)])
    error_message = "functions keys must be StreamGate function names."
  }
}

variable "canary" {
  description = "Canary weights (0 to 1) by function: the share of the `live` alias's traffic sent to canary_versions[name], the rest to the alias's version. Set by the release command; empty when no canary runs."
  type        = map(number)
  default     = {}

  validation {
    condition     = alltrue([for w in values(var.canary) : w >= 0 && w < 1])
    error_message = "canary weights must be at least 0 and below 1."
  }
}

variable "live_versions" {
  description = "Published version the `live` alias points at, by function; unset: the version this apply publishes."
  type        = map(string)
  default     = {}
}

variable "canary_versions" {
  description = "Version receiving the canary weight, by function (required for every function in canary)."
  type        = map(string)
  default     = {}
}

variable "transcode_max_concurrency" {
  description = "Most transcode functions the jobs queue runs at once (2 to 1000)."
  type        = number
  default     = 20

  validation {
    condition     = var.transcode_max_concurrency >= 2 && var.transcode_max_concurrency <= 1000
    error_message = "transcode_max_concurrency must be 2 to 1000 (the SQS event source's range)."
  }
}

variable "playback_provisioned_concurrency" {
  description = "Provisioned concurrency of api-playback's live alias: min and max for target tracking, and the utilisation to track."
  type = object({
    min    = number
    max    = number
    target = number
  })
  default = { min = 1, max = 20, target = 0.7 }

  validation {
    condition = (var.playback_provisioned_concurrency.min >= 0 &&
      var.playback_provisioned_concurrency.max >= var.playback_provisioned_concurrency.min &&
      var.playback_provisioned_concurrency.target > 0 && var.playback_provisioned_concurrency.target < 1)
    error_message = "playback_provisioned_concurrency needs 0 <= min <= max and 0 < target < 1."
  }
}

variable "schedule" {
  description = "EventBridge schedule expression of chain-indexer, gas-monitor and tx-tracker."
  type        = string
  default     = "rate(1 minute)"

  validation {
    condition     = can(regex("^(rate|cron)\\(.+\\)$", var.schedule))
    error_message = "schedule must be a rate(...) or cron(...) expression."
  }
}

variable "incomplete_upload_days" {
  description = "Days after which unfinished multipart uploads and temporary upload objects are removed from the sources bucket; also the longest an upload may take (STREAMGATE_UPLOAD_MAX_AGE)."
  type        = number
  default     = 2

  validation {
    condition     = var.incomplete_upload_days >= 1
    error_message = "incomplete_upload_days must be at least 1."
  }
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps function logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs offers."
  }
}

variable "alarm_topic_arn" {
  description = "SNS topic the alarms notify; empty: alarms without actions."
  type        = string
  default     = ""
}

variable "p99_duration_alarm_ms" {
  description = "p99 duration (ms) above which an API function's alarm fires."
  type        = number
  default     = 1000
}

variable "cloudfront" {
  description = "Serve the media bucket through CloudFront with signed URLs: the public key (PEM) of the key pair that signs them. Null: no distribution."
  type = object({
    public_key_pem = string
    price_class    = optional(string, "PriceClass_100")
  })
  default = null
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
