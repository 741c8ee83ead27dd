//! nginx as the yardstick for one proxy hop (Debian's `nginx-light`): one worker, keep-alive
//! connections to the upstream, no logging, in a folder of its own on a loopback port.

use std::time::Duration;

use flint_testkit::{Spawned, free_port, get, wait_for};

pub struct Nginx {
    _process: Spawned,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Nginx {
    /// nginx proxying to `127.0.0.1:upstream`; `None` when nginx is not installed.
    pub async fn start(upstream: u16) -> Option<Nginx> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).is_file())?;
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("flint-bench-nginx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let config = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             worker_rlimit_nofile 65536;\nevents {{ worker_connections 30000; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             upstream up {{ server 127.0.0.1:{upstream}; keepalive 128; }}\n  \
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://up;\n      \
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let conf = dir.join("nginx.conf");
        let process = Spawned::start(
            binary,
            &["-p", &d.to_string(), "-e", &format!("{d}/error.log"), "-c", conf.to_str().unwrap()],
            &[],
        );
        let url = format!("http://127.0.0.1:{port}/");
        wait_for("nginx to answer", Duration::from_secs(10), || async {
            get(&url).await.ok().filter(|r| r.status == 200)
        })
        .await;
        Some(Nginx { _process: process, port, dir })
    }
}

impl Nginx {
    /// The worker process, which holds the connections.
    pub fn worker(&self) -> nix::unistd::Pid {
        let workers = flint_testkit::children(self._process.pid());
        nix::unistd::Pid::from_raw(*workers.first().expect("nginx has started its worker"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A killed master (`_process` is killed when dropped) leaves its workers running, and
        // a master whose worker is killed starts another: it is asked to stop them itself.
        let master = self._process.pid();
        let _ = nix::sys::signal::kill(master, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !flint_testkit::children(master).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
