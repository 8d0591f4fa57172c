# A multi-region service job: two copies in "eu", one in "us", each a
# raw_exec shell loop. Run it with `atoll job run ops/deploy/jobs/example.hcl`
# (and `-var greeting=hi` to change what it prints).

variable "greeting" {
  type        = string
  description = "What each copy prints every second."
  default     = "hello"
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

job "web" {
  type        = "service"
  priority    = 60
  datacenters = var.datacenters

  meta {
    owner = "platform"
  }

  multiregion {
    strategy {
      max_parallel = 1
      on_failure   = "fail_all"
    }

    region "eu" {
      count       = 2
      datacenters = ["dc1"]
    }

    region "us" {
      count = 1
    }
  }

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  update {
    max_parallel      = 1
    min_healthy_time  = "5s"
    healthy_deadline  = "2m"
    progress_deadline = "5m"
    auto_revert       = true
  }

  group "web" {
    count = 1

    spread {
      attribute = "${node.datacenter}"
      weight    = 50
    }

    restart {
      attempts = 3
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    reschedule {
      delay          = "30s"
      delay_function = "exponential"
      max_delay      = "10m"
      unlimited      = true
    }

    network {
      port "http" {}
    }

    task "hello" {
      driver = "raw_exec"

      config {
        command = "/bin/sh"
        args    = ["-c", "while true; do echo ${var.greeting} from $NOMAD_ALLOC_ID; sleep 1; done"]
      }

      env {
        GREETING = var.greeting
      }

      resources {
        cpu    = 100
        memory = 64
      }

      kill_timeout = "10s"

      logs {
        max_files     = 3
        max_file_size = 5
      }
    }
  }
}
