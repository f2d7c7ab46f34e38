variable "bad" {
  type    = number
  default = "many" # ERROR: Invalid default value
}
