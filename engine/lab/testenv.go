package lab

import (
	"os"
	"strings"
)

// ForTest gives a test lab its name and subnet ("10.79.0.0/24"). When
// MIG_TEST_LAB holds a digit N, the name gets N appended and the subnet's
// third octet becomes N, so that several test runs can share one machine.
func ForTest(name, subnet string) (string, string) {
	n := os.Getenv("MIG_TEST_LAB")
	if len(n) != 1 || n[0] < '0' || n[0] > '9' {
		return name, subnet
	}
	parts := strings.Split(subnet, ".")
	if len(parts) != 4 {
		return name, subnet
	}
	parts[2] = n
	return name + n, strings.Join(parts, ".")
}
