# Added to container-cold.hcl: a check that cannot pass, after the container
# restored on the target already serves. The run must roll back: the
# restored container is destroyed, the address goes back, and the source
# container resumes.
step "verify" "never" {
  http {
    url        = "http://${var.service_ip}:${var.service_port}/"
    body_regex = "^never$"
  }
  depends_on = [step.up]
  timeout    = "1s"
}
