# Shared by every fixture of this directory, which loads as one workflow.
variable "unset" {
  type = string
}

host "a" {}
host "b" {}

process "web" {
  host = host.a
  pid  = 1
}
