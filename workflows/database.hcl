# database.hcl: a server whose data files are on the source's own disk
# (a database: MariaDB, SQLite behind a service, …). CRIU moves the
# process; its files must be on the target, as they were at the freeze,
# before the restore opens them again. So the data directory is copied
# twice: once while the server runs (a seed, which may be torn), then, the
# server frozen, as a delta: only the 1 MiB blocks that changed since
# travel in the pause, and the target builds the rest from its seed. Both
# hosts still read the whole directory in the pause (to compare it), but
# only what the server wrote in between crosses the network. The memory
# goes as in pageserver.hcl.
#
# Databases lock their files: the workload sets file_locks, and the restore
# takes the locks again on the copies. Where the hosts share the files
# (NFS, a SAN volume) no copy is needed, but the frozen source would keep
# its locks until the move commits: `mig plan` refuses such a move.
#
#   mig plan  -var pidfile=/run/mysqld/mysqld.pid -var data_dir=/var/lib/mysql workflows/database.hcl
#   mig apply -var pidfile=/run/mysqld/mysqld.pid -var data_dir=/var/lib/mysql workflows/database.hcl
#
# If any step fails after the freeze, the run rolls back: the address goes
# back to the source, the target's copy of the data directory goes back to
# what it was, and the source resumes where it stopped. Once the run
# commits, the target has the process's pid file. The source keeps its
# data directory (and its stale pid file): mig does not delete a
# database's files; remove them once you no longer want them as a backup.

variable "lab" {
  type        = string
  default     = "/var/lib/mig-lab/lab"
  description = "Directory where `mig lab up` wrote the SSH identity and known_hosts."
}

variable "source_address" {
  type    = string
  default = "10.77.0.11:22"
}

variable "target_address" {
  type    = string
  default = "10.77.0.12:22"
}

variable "pidfile" {
  type        = string
  default     = "/run/mysqld/mysqld.pid"
  description = "Pid file of the server to move, as the source host sees it."
}

variable "data_dir" {
  type        = string
  default     = "/var/lib/mysql"
  description = "The server's data directory, on the source's own disk; it goes to the same path on the target."
}

variable "service_ip" {
  type        = string
  default     = "10.77.0.100"
  description = "The address clients use; it moves with the process."
}

variable "service_port" {
  type    = number
  default = 3306
}

host "src" {
  ssh {
    address       = var.source_address
    user          = "root"
    identity_file = "${var.lab}/id_ed25519"
    known_hosts   = "${var.lab}/known_hosts"
  }
}

host "dst" {
  ssh {
    address       = var.target_address
    user          = "root"
    identity_file = "${var.lab}/id_ed25519"
    known_hosts   = "${var.lab}/known_hosts"
  }
}

process "db" {
  host            = host.src
  pidfile         = var.pidfile
  tcp_established = true
  file_locks      = true
}

variable "greeting" {
  type        = string
  default     = ""
  description = "What the server sends first on a new connection (\"MariaDB\" is in MariaDB's); empty: a connect is enough."
}

# New connections wait while the server moves, and each sample is one. A
# server that speaks first (MySQL, MariaDB, SMTP) shows it answers with
# greeting; for one whose client speaks first, use send and expect.
probe "db" {
  tcp {
    address = "${var.service_ip}:${var.service_port}"
    expect  = var.greeting
  }
  interval = "5ms"
  timeout  = "5s"
}

# While the server runs: most of the data directory, ahead of the pause.
# Files it writes meanwhile are copied torn; step.data makes them whole.
step "copy" "seed" {
  from        = host.src
  to          = host.dst
  source      = var.data_dir
  destination = var.data_dir
  direct      = true
  seed        = true
  timeout     = "30m"
}

step "dump" "final" {
  workload    = process.db
  mode        = "page-server"
  dir         = "/var/lib/mig/images/db"
  target      = host.dst
  address     = split(":", var.target_address)[0]
  send_images = true
  depends_on  = [step.seed]
  timeout     = "2m"
}

# After the dump: the files are whole only once the server is frozen, and
# `mig plan` refuses a copy of files it writes that runs before that.
step "copy" "data" {
  from        = host.src
  to          = host.dst
  source      = var.data_dir
  destination = var.data_dir
  direct      = true
  delta       = true
  depends_on  = [step.final]
  timeout     = "10m"
}

step "move_ip" "vip" {
  address    = "${var.service_ip}/24"
  from       = host.src
  to         = host.dst
  interface  = "eth0"
  depends_on = [step.final]
}

step "restore" "start" {
  workload   = process.db
  host       = host.dst
  dir        = step.final.target_dir
  depends_on = [step.vip, step.data]
  timeout    = "2m"
}

step "verify" "up" {
  tcp {
    address = "${var.service_ip}:${var.service_port}"
    expect  = var.greeting
  }
  depends_on = [step.start]
  timeout    = "10s"
}
