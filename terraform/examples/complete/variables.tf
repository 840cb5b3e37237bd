variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "environment" {
  description = "Environment name, part of every resource's name."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,15}$", var.environment))
    error_message = "environment must be 2 to 16 lowercase letters or digits."
  }
}

variable "artifacts_dir" {
  description = "Where cargo lambda put the zips."
  type        = string
  default     = "../../../target/lambda"
}

variable "ffmpeg_layer_arn" {
  description = "Lambda layer version with ffmpeg and ffprobe for the functions that need them."
  type        = string
}

variable "domain" {
  description = "The domain viewers sign in on."
  type        = string
}

variable "session_key" {
  description = "PASERK k4.secret key signing session tokens."
  type        = string
  sensitive   = true
}

variable "url_signing_key" {
  description = "64 hex digits signing playback URLs."
  type        = string
  sensitive   = true
}

variable "rpc_urls" {
  description = "JSON-RPC URLs by chain id."
  type        = map(string)
  sensitive   = true
  default     = {}
}

variable "canary" {
  description = "Canary weights by function, set by the release command."
  type        = map(number)
  default     = {}
}

variable "canary_versions" {
  description = "Canary versions by function, set by the release command."
  type        = map(string)
  default     = {}
}

variable "live_versions" {
  description = "Versions the live aliases point at, set by the release command."
  type        = map(string)
  default     = {}
}
