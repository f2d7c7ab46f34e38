# hello.hcl: the smallest mig workflow. It runs two commands on this machine;
# the second uses the first one's output, so it runs after it.
#
#   mig plan workflows/hello.hcl
#   mig apply -var greeting=hi workflows/hello.hcl

variable "greeting" {
  type        = string
  default     = "hello"
  description = "What to say."
}

locals {
  who     = "mig"
  message = format("%s from %s", var.greeting, local.who)
}

host "local" {}

step "exec" "greet" {
  host    = host.local
  argv    = ["echo", local.message]
  timeout = "10s"
}

step "exec" "count" {
  host = host.local
  # A shell only because the user asks for one; the message reaches it as an
  # environment variable, never spliced into the script.
  argv = ["sh", "-c", "printf %s \"$MESSAGE\" | wc -c"]
  env = {
    MESSAGE = trimspace(step.greet.stdout)
  }
  timeout = "5s"

  retry {
    attempts  = 3
    delay     = "100ms"
    backoff   = 2
    max_delay = "1s"
  }
}
