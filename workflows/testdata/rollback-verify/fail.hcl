# Added to cold.hcl: a check that cannot pass, after the target already
# serves. The run must roll back: the target's process is killed, the
# address goes back and the source resumes.
step "verify" "never" {
  http {
    url        = "http://${var.service_ip}:${var.service_port}/"
    body_regex = "^never$"
  }
  depends_on = [step.up]
  timeout    = "1s"
}
