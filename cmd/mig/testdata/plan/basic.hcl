variable "greeting" {
  default = "hi"
}

variable "token" {
  default   = "s3cret"
  sensitive = true
}

variable "targets" {
  type    = map(string)
  default = { a = "1", b = "2" }
}

locals {
  message = upper(var.greeting)
}

host "local" {}

host "remote" {
  ssh {
    address = "10.0.0.2:22"
    user    = "root"
  }
}

process "web" {
  host = host.local
  pid  = 42
}

step "exec" "hello" {
  host    = host.local
  argv    = ["echo", local.message, process.web.kind]
  timeout = "10s"
}

step "fake" "use" {
  host  = host.remote
  value = step.hello.stdout
  list  = [var.token, "plain"]
  any   = { on = host.local, proc = process.web, n = null }
  retry {
    attempts = 4
    delay    = "2s"
  }
}

step "fake" "each" {
  for_each = var.targets
  value    = "${each.key}=${each.value}"
  count    = step.use.attempt
}

step "fake" "later" {
  for_each = toset([step.use.value])
  value    = each.key
}

step "fake" "wait" {
  hang       = true
  timeout    = "1m"
  depends_on = [step.each, step.later]
}
