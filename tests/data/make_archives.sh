#!/bin/sh
# Build image archives with real tools for tests/unit/test_archives_*.py.
#
#   tests/data/make_archives.sh OUTDIR
#
# OUTDIR/layout        umoci layout: tags `base` (1 layer) and `app` (2 layers)
# OUTDIR/oci.tar       skopeo oci-archive of app
# OUTDIR/docker.tar    skopeo docker-archive (legacy format) of app, tagged
#                      example.com/app:1 and busybox:latest
# OUTDIR/podman-docker.tar, podman-oci.tar   podman save of base+app (only if
#                      podman works here; isolated storage under OUTDIR)
# OUTDIR/*.tar.gz      gzip of each archive
# OUTDIR/ref-<name>/   the same image(s) copied out by skopeo, as the oracle:
#                      oci: layouts for OCI archives, dir: for docker archives
#                      (a docker archive has no manifest blob to compare, and
#                      skopeo's docker->oci conversion rewrites the config)
set -eu
out=$1
mkdir -p "$out"
cd "$out"
q() { "$@" >/dev/null 2>&1; }

rm -rf layout src
umoci init --layout layout
umoci new --image layout:base
mkdir -p src/etc src/bin
echo "hello from base" > src/etc/hello
printf '#!/bin/sh\necho hi\n' > src/bin/hi
chmod 755 src/bin/hi
q umoci insert --rootless --image layout:base src/etc /etc
q umoci insert --rootless --image layout:base src/bin /bin
q umoci tag --image layout:base app
mkdir -p src/data
head -c 300000 /dev/urandom > src/data/random.bin
q umoci insert --rootless --image layout:app src/data /data

q skopeo copy oci:layout:app oci-archive:oci.tar:app
q skopeo copy --additional-tag busybox:latest oci:layout:app docker-archive:docker.tar:example.com/app:1

if command -v podman >/dev/null 2>&1; then
    p="podman --root $out/podman/root --runroot $out/podman/run --storage-driver vfs"
    # Each pull names its image localhost/layout:latest; tag it before the next one.
    if q $p pull oci:layout:base && q $p tag localhost/layout:latest example.org/base:1 \
        && q $p pull oci:layout:app && q $p tag localhost/layout:latest example.org/app:2 \
        && q $p save -m -o podman-docker.tar example.org/base:1 example.org/app:2 \
        && q $p save --format oci-archive -o podman-oci.tar example.org/app:2; then
        :
    else
        rm -f podman-docker.tar podman-oci.tar
    fi
    rm -rf podman
fi

for a in *.tar; do
    gzip -kf "$a"
done

rm -rf ref-*
q skopeo copy oci-archive:oci.tar:app oci:ref-oci:app
q skopeo copy docker-archive:docker.tar:example.com/app:1 dir:ref-docker
if [ -f podman-oci.tar ]; then
    q skopeo copy oci-archive:podman-oci.tar oci:ref-podman-oci:app
fi
rm -rf src
