# A batch job: three copies of a short computation, rescheduled once on
# failure. `atoll job run ops/deploy/jobs/batch.hcl -var runs=5`.

variable "runs" {
  type    = number
  default = 3
}

job "report" {
  type        = "batch"
  datacenters = ["*"]

  group "compute" {
    count = var.runs

    restart {
      attempts = 1
      delay    = "5s"
      mode     = "fail"
    }

    reschedule {
      attempts  = 1
      interval  = "1h"
      delay     = "10s"
      unlimited = false
    }

    task "sum" {
      driver = "raw_exec"

      config {
        command = "/bin/sh"
        args    = ["-c", "seq 1 1000 | awk '{s+=$1} END {print \"sum\", s}'"]
      }

      resources {
        cpu    = 50
        memory = 32
      }
    }
  }
}
