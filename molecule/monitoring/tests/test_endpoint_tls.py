"""Verify the endpoint's TLS: the certificate from the controller is the one the API serves, its
key is readable by HAProxy only, and plain HTTP gets no answer from the API port."""

import os

import yaml

GATEWAY = "molecule-mon-gw"
testinfra_hosts = [GATEWAY]

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
with open(os.path.join(PROJECT, "roles", "fleet_endpoint", "defaults", "main.yml"), encoding="utf-8") as _f:
    PEM = yaml.safe_load(_f)["fleet_endpoint_tls_pem"]
with open(os.path.join(HERE, "..", "group_vars", "sparkfleet_endpoint.yml"), encoding="utf-8") as _f:
    KEY = yaml.safe_load(_f)["fleet_endpoint_api_key"]
CONTROLLER_PEM = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "api.pem")


def test_the_hosts_copy_is_the_controllers_and_only_haproxy_reads_it(host):
    copy = host.file(PEM)
    assert copy.exists and copy.user == "root" and copy.group == "haproxy" and copy.mode == 0o640
    with open(CONTROLLER_PEM, encoding="utf-8") as handle:
        assert copy.content_string == handle.read()


def test_the_api_answers_over_tls_with_that_certificate(host):
    # The certificate names mon-gw: curl checks it against the copy (its CERTIFICATE block).
    out = host.check_output(
        "curl -sS --fail --cacert %s --resolve mon-gw:8000:127.0.0.1 -H 'Authorization: Bearer %s' "
        "-H 'Content-Type: application/json' -d '{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}' "
        "https://mon-gw:8000/v1/chat/completions" % (PEM, KEY))
    assert '"choices"' in out


def test_plain_http_gets_no_answer_from_the_api_port(host):
    run = host.run("curl -sS --max-time 5 -o /dev/null http://127.0.0.1:8000/v1/models")
    # The TLS listener closes a connection that opens without a handshake: curl gets no reply.
    assert run.rc != 0, (run.rc, run.stdout, run.stderr)
