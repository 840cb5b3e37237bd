output "api" {
  description = "The API functions' URLs."
  value       = module.streamgate.function_urls
}

output "media_bucket" {
  description = "The bucket streams are served from."
  value       = module.streamgate.media_bucket
}
