"""``LOAD.md`` and ``load-image.sh``: three ways to get the bundle's image onto nodes
that have no registry to pull from.

1. k3s/RKE2: copy the (joined) tar into ``agent/images/``; the agent imports it at start.
2. containerd: ``ctr -n k8s.io images import BUNDLE.tar`` on every node.
3. a site registry: ``skopeo copy docker-archive:BUNDLE.tar docker://REGISTRY/...``.

The bundle imports as it is: a docker-archive whose first member,
``ezrunner-bundle.json``, containerd and skopeo skip. Split bundles are joined
first (and checked against their ``.sha256``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

SCRIPT_NAME = "load-image.sh"
LOAD_DOC = "LOAD.md"


@dataclass(frozen=True)
class LoadFacts:
    bundle: str  # BUNDLE.tar (the joined name)
    parts: int  # 1 when not split
    image: str  # the image tag inside
    registry: str | None
    secret: str | None  # the API key's Secret, None: no key
    namespace: str | None


_SCRIPT = r"""#!/bin/sh
# Load the ezrunner bundle's image on a Kubernetes node with no registry (see LOAD.md).
#   ./load-image.sh k3s|rke2 [BUNDLE.tar]   copy into the agent's images/ folder (imported at agent start)
#   ./load-image.sh ctr [BUNDLE.tar]        ctr -n k8s.io images import (run on every node)
#   ./load-image.sh registry REGISTRY [BUNDLE.tar]   skopeo copy into a site registry
# Split bundles (BUNDLE.tar.part-001, ...) are joined first; the joined tar is checked against BUNDLE.tar.sha256.
set -eu
IMAGE=@IMAGE@
route=${1:-}
[ $# -gt 0 ] && shift
if [ "$route" = registry ]; then
  registry=${1:?usage: $0 registry REGISTRY [BUNDLE.tar]}
  shift
fi
bundle=${1:-@BUNDLE@}

join_parts() {
  if [ ! -f "$bundle" ] && [ -f "$bundle.part-001" ]; then
    echo "joining $bundle.part-* into $bundle" >&2
    cat "$bundle".part-[0-9][0-9][0-9] > "$bundle.joining"
    mv "$bundle.joining" "$bundle"
  fi
  [ -f "$bundle" ] || { echo "error: $bundle not found (nor $bundle.part-001)" >&2; exit 2; }
  if [ -f "$bundle.sha256" ]; then
    (cd "$(dirname "$bundle")" && sha256sum -c "$(basename "$bundle").sha256") >&2
  fi
}

case "$route" in
  k3s|rke2)
    join_parts
    dir=${AGENT_IMAGES:-/var/lib/rancher/$route/agent/images}
    mkdir -p "$dir"
    cp "$bundle" "$dir/"
    echo "copied into $dir: restart the agent (systemctl restart $route-agent or $route) to import $IMAGE" >&2
    ;;
  ctr)
    join_parts
    ctr=${CTR:-ctr}
    ns=${CTR_NAMESPACE:-k8s.io}
    $ctr -n "$ns" images import "$bundle"
    $ctr -n "$ns" images ls -q | grep -F "$IMAGE" >&2
    ;;
  registry)
    join_parts
    skopeo copy ${SKOPEO_FLAGS:-} "docker-archive:$bundle" "docker://$registry/$IMAGE"
    echo "pushed $registry/$IMAGE: render with ezrunner k8s --registry $registry" >&2
    ;;
  *)
    sed -n '2,6p' "$0" >&2
    exit 2
    ;;
esac
"""


def load_script(facts: LoadFacts) -> str:
    return _SCRIPT.replace("@IMAGE@", shlex.quote(facts.image)).replace("@BUNDLE@", shlex.quote(facts.bundle))


def load_doc(facts: LoadFacts) -> str:
    bundle, image = facts.bundle, facts.image
    split = (f"The bundle is split into {facts.parts} parts. Every route joins them first "
             f"(`cat {bundle}.part-* > {bundle}`) and checks `{bundle}.sha256`.\n\n" if facts.parts > 1 else "")
    registry = facts.registry or "REGISTRY"
    ns = f" -n {facts.namespace}" if facts.namespace else ""
    secret = (f"    kubectl{ns} create secret generic {facts.secret} --from-literal=api-key=\"$API_KEY\"\n"
              if facts.secret else "")
    return f"""# Loading `{image}` onto the cluster's nodes

Kubernetes pulls nothing here: the manifests use `imagePullPolicy: IfNotPresent` with
the exact tag, so the image must be in each GPU node's containerd (`k8s.io` namespace)
or in a registry the nodes reach. `{bundle}` is a docker-archive: containerd, k3s and
skopeo read it as it is (its first member, `ezrunner-bundle.json`, is skipped).

{split}Copy `{bundle}` (or its parts), `{bundle}.sha256` and `{SCRIPT_NAME}` to each node, then use one route.

## 1. k3s or RKE2: the agent's images folder

    sudo ./{SCRIPT_NAME} k3s {bundle}     # or: rke2

It copies the tar into `/var/lib/rancher/k3s/agent/images/` (RKE2: `/var/lib/rancher/rke2/agent/images/`);
the agent imports every tar there when it starts (restart it). Big bundles make that start slow.

## 2. Any containerd node: `ctr import`

    sudo ./{SCRIPT_NAME} ctr {bundle}
    # the same by hand:
    sudo ctr -n k8s.io images import {bundle}

On k3s use `CTR="k3s ctr"`; on RKE2
`CTR="/var/lib/rancher/rke2/bin/ctr --address /run/k3s/containerd/containerd.sock"`.
containerd names it `docker.io/{image}`, which is what the kubelet looks for.
The pause (sandbox) image must be there too, or no pod starts.

## 3. A site registry: `skopeo copy`

    ./{SCRIPT_NAME} registry {registry} {bundle}
    # the same by hand:
    skopeo copy docker-archive:{bundle} docker://{registry}/{image}

Add `SKOPEO_FLAGS=--dest-tls-verify=false` for a plain-HTTP registry. Then render the
manifests for it: `ezrunner k8s {bundle} -o DIR --registry {registry}`.

## Then

{secret}    kubectl apply -k base/            # or overlays/hpa/, overlays/keda/
"""
