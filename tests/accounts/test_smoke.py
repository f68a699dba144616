def test_login_page_renders(client, db):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b"Sign in" in response.content


def test_dashboard_for_verified_owner(client, login, alice, tenant_a):
    login(alice)
    response = client.get("/")
    assert response.status_code == 200
    assert b"Clinic A" in response.content
